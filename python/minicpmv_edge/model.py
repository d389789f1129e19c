"""The weights of one MiniCPM-V: the language model (llama.cpp), the vision encoder, the family they belong to, the
chat template and the image-embedding cache. Loaded once and shared by every conversation (session.py) on them;
each part is safe to use from several threads."""

from __future__ import annotations

import os

from . import logs
from .cache import EmbeddingCache, file_identity
from .chat_options import check_bool, check_int, with_generation_config
from .cpus import available_cpus
from .encoder import VisionEncoder
from .errors import ClosedError
from .families import family_of_files, llm_architectures
from .llama_adapter import LlamaModel
from .llm_file import ModelFileError, check_llm_file
from .media import Media
from .messages import MessageError
from .prompt import check_template


class Model:
    def __init__(self, model_path: str | os.PathLike[str], mmproj_path: str | os.PathLike[str], *,
                 n_threads: int | None = None, device: str = "cpu", n_gpu_layers: int = 0,
                 cache: EmbeddingCache | None = None, verbose: bool = False) -> None:
        """`n_gpu_layers`: language-model layers offloaded to the GPU llama.cpp was built for; `device`: the vision
        encoder's ("cpu", "auto" or a name); `cache`: where image embeddings are kept between calls (default: 512 MiB
        in memory); `verbose`: show llama.cpp's log lines (they go to the `minicpmv_edge` logger either way)."""
        check_int("n_gpu_layers", n_gpu_layers, -1)
        self.n_threads = available_cpus() if n_threads is None else check_int("n_threads", n_threads, 1)
        logs.set_verbose(check_bool("verbose", verbose))
        self.encoder: VisionEncoder | None = None
        self.llm: LlamaModel | None = None
        try:
            self.encoder = VisionEncoder(mmproj_path, n_threads=self.n_threads, device=device)
            file = check_llm_file(model_path, llm_architectures())
            self.family = family_of_files(self.encoder.projector, file.arch, mmproj_path, model_path)
            if self.encoder.hidden != file.n_embd:
                raise ValueError(f"{mmproj_path} outputs width {self.encoder.hidden} but {model_path} has n_embd "
                                 f"{file.n_embd}: they are not the same model")
            missing = [t for t in self.family.layout_tokens if t not in file.specials]
            if missing:
                raise ModelFileError(f"{model_path}: the vocabulary has no special token {missing[0]!r}, which "
                                     f"{self.family.display} prompts need")
            if self.encoder.use_image_id and not {"<image_id>", "</image_id>"} <= file.specials.keys():
                raise ModelFileError(f"{mmproj_path}: minicpmv_edge.use_image_id is true, but {model_path} has no "
                                     "<image_id> special token")
            self.template = file.chat_template or self.family.chat_template
            try:
                check_template(self.template, self.family)
            except MessageError as e:
                raise ModelFileError(f"{model_path}: tokenizer.chat_template does not render: {e}") from e
            self.llm = LlamaModel(file, n_gpu_layers=n_gpu_layers)
            # chat()'s defaults: the checkpoint's generation_config.json where the GGUF carries it
            self.chat_defaults = with_generation_config(self.family.chat, file.generation)
            self.stop_ids = {self.llm.token_id(t) for t in self.family.stop_tokens}
            self.penalty_prefix = tuple(self.llm.token_id(t) for t in self.family.penalty_history)
        except BaseException:
            self.close()
            raise
        self.cache = cache if cache is not None else EmbeddingCache()
        self.media = Media(self.encoder, self.cache, file_identity(mmproj_path), self.n_threads, self.family)
        self._closed = False

    @property
    def closed(self) -> bool:
        return getattr(self, "_closed", True)

    def check_open(self) -> None:
        if self.closed:
            raise ClosedError("this MiniCPMV is closed")

    def close(self) -> None:
        """Free the language model and the encoder now (sessions on them must be closed first). Idempotent."""
        self._closed = True
        for part in (self.llm, self.encoder):
            if part is not None:
                part.close()
