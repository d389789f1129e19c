"""Which files a Hub name picks (hub.py): llama.cpp's `-hf REPO[:QUANT]` rules, on file lists of the layouts the
MiniCPM-V GGUF repositories use. No network: the downloads themselves are tests/test_hub.py's."""

from __future__ import annotations

import pytest

from minicpmv_edge.hub import HubError, choose_gguf, has_tag, split_name

OFFICIAL = ["README.md", ".gitattributes", "ggml-model-IQ4_XS.gguf", "ggml-model-Q4_0.gguf", "ggml-model-Q4_K.gguf",
            "ggml-model-Q4_K_M.gguf", "ggml-model-Q4_K_S.gguf", "ggml-model-Q8_0.gguf", "ggml-model-f16.gguf",
            "ggml-model-bf16.gguf", "mmproj-model-f16.gguf"]


@pytest.mark.parametrize(("name", "want"), [
    ("openbmb/MiniCPM-V-2_6-gguf", ("openbmb/MiniCPM-V-2_6-gguf", None)),
    ("openbmb/MiniCPM-V-2_6-gguf:Q4_K_M", ("openbmb/MiniCPM-V-2_6-gguf", "Q4_K_M")),
    ("a/b.c:q8_0", ("a/b.c", "q8_0")),
])
def test_split_name(name: str, want: tuple[str, str | None]) -> None:
    assert split_name(name) == want


@pytest.mark.parametrize("name", ["", "model", "a/b/c", "/b", "a/", "a/b:", "a/b:Q4 K", "../x", "a/..", "a/b:x/y",
                                  "-a/b", "https://huggingface.co/a/b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(HubError, match="is not a Hub model name"):
        split_name(name)


@pytest.mark.parametrize(("filename", "tag", "want"), [
    ("ggml-model-Q4_K_M.gguf", "Q4_K_M", True),
    ("ggml-model-Q4_K_M.gguf", "q4_k_m", True),
    ("ggml-model-Q4_K_M.gguf", "Q4_K", False),  # a prefix of another tag is not that tag
    ("ggml-model-Q4_K.gguf", "Q4_K", True),
    ("ggml-model-bf16.gguf", "F16", False),
    ("ggml-model-f16.gguf", "F16", True),
    ("sub/MiniCPM-V-4_6-Q8_0.gguf", "Q8_0", True),
    ("model_Q8_0.gguf", "Q8_0", True),
    ("Q8_0/model.gguf", "Q8_0", False),  # the tag must be in the file's own name
])
def test_has_tag(filename: str, tag: str, want: bool) -> None:
    assert has_tag(filename, tag) is want


def test_official_layout() -> None:
    assert choose_gguf("r", OFFICIAL, None) == ("ggml-model-Q4_K_M.gguf", "mmproj-model-f16.gguf", "Q4_K_M")
    assert choose_gguf("r", OFFICIAL, "Q4_K") == ("ggml-model-Q4_K.gguf", "mmproj-model-f16.gguf", "Q4_K")
    assert choose_gguf("r", OFFICIAL, "bf16")[0] == "ggml-model-bf16.gguf"
    assert choose_gguf("r", OFFICIAL, "iq4_xs")[0] == "ggml-model-IQ4_XS.gguf"


def test_no_default_quant_takes_the_first_file_as_llama_cpp() -> None:
    files = ["mmproj-f16.gguf", "m-Q8_0.gguf", "m-F16.gguf"]
    assert choose_gguf("r", files, None) == ("m-F16.gguf", "mmproj-f16.gguf", "F16")


def test_mmproj_choice() -> None:
    files = ["m-Q8_0.gguf", "m-Q4_K_M.gguf", "mmproj-m-f32.gguf", "mmproj-m-Q8_0.gguf", "mmproj-m-bf16.gguf",
             "mmproj-m-f16.gguf"]
    assert choose_gguf("r", files, "Q8_0")[1] == "mmproj-m-Q8_0.gguf"  # the same quantization
    assert choose_gguf("r", files, "Q4_K_M")[1] == "mmproj-m-f16.gguf"  # else f16, then bf16, f32, q8_0
    assert choose_gguf("r", [f for f in files if f != "mmproj-m-f16.gguf"], "Q4_K_M")[1] == "mmproj-m-bf16.gguf"
    assert choose_gguf("r", ["m-Q4_K_M.gguf", "x-mmproj.gguf"], None)[1] == "x-mmproj.gguf"


def test_errors_name_what_there_is() -> None:
    with pytest.raises(HubError, match=r"no language-model GGUF for quantization 'Q5_K_M'; it has: .*Q4_K_M "
                                       r"\(ggml-model-Q4_K_M\.gguf\).*F16 \(ggml-model-f16\.gguf\)"):
        choose_gguf("r", OFFICIAL, "Q5_K_M")
    with pytest.raises(HubError, match=r"r has no mmproj GGUF .*--mmproj"):
        choose_gguf("r", ["m-Q4_K_M.gguf"], None)
    assert choose_gguf("r", ["m-Q4_K_M.gguf"], None, need_mmproj=False) == ("m-Q4_K_M.gguf", None, "Q4_K_M")
    with pytest.raises(HubError, match="no language-model GGUF"):
        choose_gguf("r", ["mmproj-f16.gguf"], None)
    with pytest.raises(HubError, match="matches several files"):
        choose_gguf("r", ["a-Q4_K_M.gguf", "b-Q4_K_M.gguf", "mmproj.gguf"], None)
    with pytest.raises(HubError, match="split GGUF"):
        choose_gguf("r", ["m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf", "mmproj.gguf"], "Q4_K_M")
