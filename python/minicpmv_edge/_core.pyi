"""Type stub for the native extension (cpp/bindings.cpp)."""

class DeviceInfo:
    name: str
    description: str
    kind: str
    memory_free: int
    memory_total: int

class GgufTensorInfo:
    name: str
    type: str
    ne: list[int]
    offset: int
    nbytes: int

GgufValue = bool | int | float | str | list[int] | list[float] | list[str] | list[bool]

class GgufInfo:
    version: int
    data_offset: int
    file_size: int
    kv: list[tuple[str, GgufValue]]
    tensors: list[GgufTensorInfo]

def list_devices() -> list[DeviceInfo]: ...
def list_backends() -> list[str]: ...
def read_gguf_info(path: str) -> GgufInfo: ...
def ggml_commit() -> str: ...
