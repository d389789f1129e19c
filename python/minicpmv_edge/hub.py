"""Models named on the Hugging Face Hub (`-hf REPO[:QUANT]`, `MiniCPMV.from_pretrained`), as llama.cpp's `-hf` does.

A GGUF repository (the official MiniCPM-V ones: several quantizations of the language model, one or more
`mmproj-*.gguf`) gives the language-model file of the named quantization (llama.cpp's default, Q4_K_M, when none is
named) and an mmproj; an original repository (config.json + *.safetensors, or OmniLMM-12B's single torch pickle
`pytorch_model.bin`, which the converter reads without running code) is downloaded and converted once, the result
cached. Downloads go through `huggingface_hub`, so its cache, `HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`,
tokens, progress bars and resumed downloads behave as its users know; every file is checked with our GGUF checks
before anything loads it. This module is the only one that uses the network, and only when a user names a model.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_QUANT = "Q4_K_M"  # llama.cpp's default tag for -hf
# mmproj choice when a repository has several and none matches the quantization named (llama.cpp's files: f16)
_MMPROJ_PREFERENCE = ("F16", "BF16", "F32", "Q8_0")
# what the converter reads from an original repository (never its .py remote code); its torch pickle only where it
# has no safetensors (convert/torch_pickle.py reads it without running code)
_ORIGINAL_SUFFIXES = (".json", ".safetensors", ".model", ".jinja", ".txt", ".tiktoken")
_PICKLE = "pytorch_model.bin"
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_SPLIT_RE = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
_CONVERTED_REVISION = 1  # bump when the converter's output changes, so cached conversions are made again


class HubError(ValueError):
    """A model named on the Hub that cannot be had: no such repository or file, no network and no cached copy."""


@dataclass(frozen=True)
class HubFiles:
    """The local files for a Hub name: what `MiniCPMV(model, mmproj)` loads."""

    repo: str
    commit: str
    quant: str
    model: Path
    mmproj: Path


def split_name(name: str) -> tuple[str, str | None]:
    """'owner/name:Q4_K_M' -> ('owner/name', 'Q4_K_M'); the tag is optional."""
    repo, sep, tag = name.partition(":")
    if not _REPO_RE.fullmatch(repo) or ".." in repo or (sep and not re.fullmatch(r"[A-Za-z0-9_.-]+", tag)):
        raise HubError(f"{name!r} is not a Hub model name (OWNER/NAME or OWNER/NAME:QUANT, e.g. "
                       "openbmb/MiniCPM-V-2_6-gguf:Q4_K_M)")
    return repo, (tag or None)


def has_tag(filename: str, tag: str) -> bool:
    """Whether a file name carries a quantization tag as a whole word: 'Q4_K' is not in '...-Q4_K_M.gguf', nor
    'F16' in '...-BF16.gguf' (case-insensitive, as llama.cpp matches tags)."""
    base = filename.rsplit("/", 1)[-1]
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(tag)}(?![A-Za-z0-9_])", base, re.IGNORECASE) is not None


def _is_mmproj(filename: str) -> bool:
    return "mmproj" in filename.rsplit("/", 1)[-1].lower()


def _tag_of(filename: str) -> str:
    """The quantization a GGUF file name shows (for messages): 'ggml-model-Q4_K_M.gguf' -> 'Q4_K_M'."""
    m = re.search(r"(?<![A-Za-z0-9])((?:I?Q\d[A-Za-z0-9_]*)|B?F16|F32)(?=\.gguf$)", filename.rsplit("/", 1)[-1],
                  re.IGNORECASE)
    return m.group(1).upper() if m else filename.rsplit("/", 1)[-1]


def choose_gguf(repo: str, files: list[str], quant: str | None,
                need_mmproj: bool = True) -> tuple[str, str | None, str]:
    """(language-model file, mmproj file, quantization) of a GGUF repository's file list; HubError names what is
    missing and what there is. Several mmproj files: the one with the same tag, else f16, bf16, f32, q8_0."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    models = [f for f in ggufs if not _is_mmproj(f)]
    mmprojs = [f for f in ggufs if _is_mmproj(f)]
    if not models:
        raise HubError(f"{repo} has no language-model GGUF (its GGUF files: {', '.join(ggufs) or 'none'})")
    tag = quant or DEFAULT_QUANT
    picked = [f for f in models if has_tag(f, tag)]
    if not picked and quant is None:  # as llama.cpp: no tag named and no Q4_K_M: the first file
        picked, tag = models[:1], _tag_of(models[0])
    if not picked:
        have = ", ".join(f"{_tag_of(f)} ({f})" for f in models)
        raise HubError(f"{repo} has no language-model GGUF for quantization {quant!r}; it has: {have}")
    if any(_SPLIT_RE.search(f) for f in picked):
        raise HubError(f"{repo}: the {tag} language model is a split GGUF ({', '.join(picked)}), which this runtime "
                       "does not load; merge it with llama.cpp's gguf-split --merge and load the file with -m")
    if len(picked) > 1:
        raise HubError(f"{repo}: quantization {tag!r} matches several files ({', '.join(picked)}); name the one "
                       "you want with a tag only it carries")
    if not mmprojs:
        if not need_mmproj:
            return picked[0], None, tag
        raise HubError(f"{repo} has no mmproj GGUF (the vision encoder file, named mmproj*.gguf); its GGUF files: "
                       f"{', '.join(ggufs)}; give one with --mmproj PATH (Python: mmproj=PATH)")
    mmproj = next((m for t in (tag, *_MMPROJ_PREFERENCE) for m in mmprojs if has_tag(m, t)), mmprojs[0])
    return picked[0], mmproj, tag


def _has_safetensors(files: list[str]) -> bool:
    return any(f.endswith(".safetensors") for f in files)


def _is_original(files: list[str]) -> bool:
    return "config.json" in files and (_has_safetensors(files) or _PICKLE in files)


def _offline_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises when the Hub cannot be reached (requests in 0.x, httpx in 1.x)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    kinds: list[type[BaseException]] = [OfflineModeIsEnabled, OSError, TimeoutError]
    try:
        import httpx

        kinds.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(kinds)


def _listing(repo: str, revision: str | None) -> tuple[str, list[str], bool]:
    """(commit, file names, online): from the Hub, or, when it cannot be reached, from the local cache."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        info = HfApi().model_info(repo, revision=revision)
        return str(info.sha), [s.rfilename for s in info.siblings or []], True
    except GatedRepoError as e:
        raise HubError(f"{repo} is gated on {constants.ENDPOINT}: accept its terms on the Hub and log in "
                       "(HF_TOKEN or `hf auth login`)") from e
    except RepositoryNotFoundError as e:
        raise HubError(f"{repo}: no such model on {constants.ENDPOINT} (a private one needs a token: HF_TOKEN or "
                       "`hf auth login`)") from e
    except RevisionNotFoundError as e:
        raise HubError(f"{repo} has no revision {revision!r}") from e
    except _offline_errors() as e:
        reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the Hub cannot be reached: {e}"
        try:
            snap = Path(snapshot_download(repo, revision=revision, local_files_only=True))
        except LocalEntryNotFoundError:
            raise HubError(f"{repo} is not in the local Hub cache ({constants.HF_HUB_CACHE}) and {reason}") from e
        files = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
        return snap.name, files, False


def _download(repo: str, revision: str | None, filename: str, online: bool) -> Path:
    """One file through huggingface_hub, by the revision the user named (not the listed commit: so it records the
    branch's commit in its cache, which is what lets a later run without the network find the files). Offline: the
    cache only, without trying the network again for each file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=not online))
    except LocalEntryNotFoundError as e:
        raise HubError(f"{repo}/{filename} is not in the local Hub cache and cannot be downloaded now ({e})") from e
    except _offline_errors() as e:
        raise HubError(f"downloading {repo}/{filename} stopped ({type(e).__name__}: {e}); run the same command "
                       "again to resume it where it stopped") from e


def _check_downloaded(repo: str, filename: str, path: Path, kind: str) -> None:
    """Our file checks on a downloaded GGUF: a damaged or wrong file is a HubError naming the repository's file."""
    from ._native import _core
    from .families import detect_mmproj, llm_architectures
    from .llm_file import check_llm_file

    try:
        if kind == "model":
            check_llm_file(path, llm_architectures())
        else:  # the header (truncation included) and what the encoder would refuse by its keys
            detect_mmproj(dict(_core.read_gguf_info(str(path)).kv), str(path))
    except ValueError as e:
        raise HubError(f"{repo}/{filename} is not a usable {kind} file: {e}") from e


def _converted(repo: str, revision: str | None, commit: str, files: list[str], quant: str | None,
               online: bool) -> HubFiles:
    """An original repository as GGUF files: converted once per commit and quantization, then read from the cache.
    No quantization named: f16 (the converter's default); f32/bf16/q8_0 are the converter's own types; a llama.cpp
    type (Q4_K_M, ...) quantizes the language model of the f16 conversion, the mmproj staying f16."""
    from .convert import convert_checkpoint
    from .convert.gguf_out import FILE_TYPES
    from .demo import cache_dir  # (the demo's and the test checkpoints' cache: MINICPMV_EDGE_CACHE)

    tag = quant or "f16"
    if tag.lower() in FILE_TYPES:
        outtype, llama_type = tag.lower(), None
    else:
        from .convert.quantize import TYPES

        if tag.upper() not in TYPES:
            raise HubError(f"{repo} is an original checkpoint: it converts to {', '.join(FILE_TYPES)} or a "
                           f"llama.cpp quantization ({', '.join(TYPES)}), not {quant!r}")
        outtype, llama_type = "f16", tag.upper()
    name = llama_type or outtype
    base = cache_dir() / "hub" / repo.replace("/", "--") / commit / f"{name}-r{_CONVERTED_REVISION}"
    model, mmproj = base / f"model-{name}.gguf", base / f"mmproj-model-{outtype}.gguf"
    if not (model.is_file() and mmproj.is_file()):
        wanted = [f for f in files if (f.endswith(_ORIGINAL_SUFFIXES) or (f == _PICKLE and not _has_safetensors(files)))
                  and "/" not in f]
        paths = [_download(repo, revision, f, online) for f in wanted]
        snapshot = paths[0].parent
        base.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=base.name + ".", dir=base.parent))
        try:
            res = convert_checkpoint(snapshot, work, outtype)
            if llama_type is not None:
                from .convert.quantize import quantize_model

                quantize_model(res.model, work / model.name, llama_type)
                Path(res.model).unlink()
            Path(res.mmproj).replace(work / mmproj.name)
            shutil.rmtree(base, ignore_errors=True)
            work.replace(base)  # nothing half-written: the folder appears whole or not at all
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return HubFiles(repo, commit, name, model, mmproj)


def resolve(name: str, quant: str | None = None, *, mmproj: str | os.PathLike[str] | None = None,
            revision: str | None = None) -> HubFiles:
    """The local files for `name` ('OWNER/NAME' or 'OWNER/NAME:QUANT'; `quant` overrides the tag), downloaded or
    converted on first use and read from the cache after that, also without a network. `mmproj`: a local mmproj to
    use instead of the repository's (for a repository that has none)."""
    repo, tag = split_name(name)
    quant = quant or tag
    commit, files, online = _listing(repo, revision)
    where = "" if online else " (offline: the files in the local Hub cache)"
    if any(f.lower().endswith(".gguf") for f in files):
        try:
            lm, mp, tag_ = choose_gguf(repo, files, quant, need_mmproj=mmproj is None)
        except HubError as e:
            raise HubError(f"{e}{where}") from e
        model_path = _download(repo, revision, lm, online)
        _check_downloaded(repo, lm, model_path, "model")
        if mp is not None and mmproj is None:
            mmproj = _download(repo, revision, mp, online)
            _check_downloaded(repo, mp, Path(mmproj), "mmproj")
        return HubFiles(repo, commit, tag_, model_path, Path(mmproj))  # type: ignore[arg-type]
    if _is_original(files):
        got = _converted(repo, revision, commit, files, quant, online)
        return got if mmproj is None else replace(got, mmproj=Path(mmproj))
    raise HubError(f"{repo} has neither GGUF files nor an original checkpoint (config.json and *.safetensors, or "
                   f"{_PICKLE})"
                   f"{where}; its files: {', '.join(files[:20]) or 'none'}")

