"""The ggml vision encoder against the PyTorch reference (tests/reference/vision.py) and llama.cpp's libmtmd."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest
from helpers import RESAMPLER_FAMILIES, cli, smooth_image

from minicpmv_edge import UnsupportedVersionError
from minicpmv_edge._native import _core
from minicpmv_edge.convert.gguf_out import GGUFFile, PlannedTensor
from minicpmv_edge.convert.quantize_mmproj import quantize_mmproj
from minicpmv_edge.encoder import VisionEncoder
from reference.mtmd import Mtmd
from reference.vision import position_ids_hf, reference_vision

VERSIONS = RESAMPLER_FAMILIES  # 4.6: test_v4_6_encoder.py
RULE = {"2.6": "hf", "2.5": "flat", "2.0": None, "1.0": None,
        "4.0": "hf"}  # each version's original position ids (None: a resized grid)
# piece patch grids (h, w): square, the 25- and 50-patch sides where float32 buckets differ from floor,
# slices of common photos, an extreme strip; 27 x 27 (2.0's own table, used as it is), grids smaller than it in
# both, one and neither direction
GRIDS = [(32, 32), (25, 50), (50, 25), (23, 45), (28, 37), (39, 26), (24, 43), (11, 90), (49, 20), (7, 3), (27, 27),
         (27, 40), (9, 27), (14, 20)]


def _grids(enc: VisionEncoder, n: int | None = None) -> list[tuple[int, int]]:
    """GRIDS, or the one square piece of a family that squashes each image into one."""
    if enc.slice_config.square:
        side = enc.slice_config.scale_resolution // enc.slice_config.patch_size
        return [(side, side)]
    return GRIDS[:n]


@pytest.fixture(scope="module")
def refs(tiny_hf) -> dict:
    """The original towers: transformers' Idefics2 (2.5, 2.6), timm's VisionTransformer (2.0)."""
    return {v: reference_vision(tiny_hf[v]) for v in VERSIONS}


def _pixels(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (3, 14 * h, 14 * w)).astype(np.float32)


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.arm64
def test_position_ids_reproduce_torch_bucketize() -> None:
    """The original float32 arange + bucketize, for every side up to 600 and the whole table row."""
    for n in range(1, 601):
        got = _core.position_ids(n, 1, 70, _core.PosRule.navit_2d)
        assert np.array_equal(got, position_ids_hf(n, 1).numpy()), n
    # where they differ from llama.cpp's exact floor (the original `modeling_navit_siglip.py`); torch's arange
    # rounds by its vector width, so the sizes depend on the CPU (x86-64: 8 float lanes; ARM NEON: 4)
    def floor(n: int) -> np.ndarray:
        return _core.position_ids(n, 1, 70, _core.PosRule.floor_2d)

    differ = [n for n in range(1, 141) if not np.array_equal(_core.position_ids(n, 1, 70, _core.PosRule.navit_2d),
                                                              floor(n))]
    assert differ == [n for n in range(1, 141) if not np.array_equal(position_ids_hf(n, 1).numpy(), floor(n))]
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert differ == [25, 49, 50, 55, 58, 77, 82, 86, 94, 98, 100, 110, 115, 135]


@pytest.mark.arm64
def test_sincos_matches_the_formula() -> None:
    from reference.vision import sincos_2d

    for h, w in [(32, 32), (3, 70), (70, 1)]:
        np.testing.assert_allclose(_core.sincos_2d(256, h, w), sincos_2d(256, h, w).numpy(), rtol=0, atol=2e-6)


@pytest.mark.arm64(version="2.6")  # NaViT positions, both matmul paths, f32 and f16
@pytest.mark.arm64(version="2.0", outtype="f32")  # the timm tower
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("outtype", "tol"), [("f32", 1e-4), ("f16", 2e-2)])
@pytest.mark.parametrize("blas", [True, False], ids=["openblas", "ggml"])
def test_parity_with_the_pytorch_reference(converted, refs, version: str, outtype: str, tol: float,
                                           blas: bool) -> None:
    enc = VisionEncoder(converted(version, outtype).mmproj, n_threads=2, blas=blas)
    assert enc.native.uses_blas == blas
    for i, (h, w) in enumerate(_grids(enc)):
        pix = _pixels(h, w, i)
        got = enc.encode([pix])[0]
        want = refs[version].encode(pix, rule=RULE[version])
        assert got.shape == want.shape == (enc.query_num, enc.hidden)
        assert _rel(got, want) <= tol, ((h, w), _rel(got, want))


@pytest.mark.parametrize("blas", [True, False], ids=["openblas", "ggml"])
def test_batched_pieces_equal_one_by_one(converted, blas: bool) -> None:
    enc = VisionEncoder(converted("2.6", "f32").mmproj, n_threads=2, blas=blas)
    pieces = [_pixels(28, 37, 0)] + [_pixels(39, 26, i) for i in range(1, 5)] + [_pixels(28, 37, 9)]
    together = enc.encode(pieces)
    assert enc.native.graph_evaluations == 2  # one per patch grid
    alone = np.stack([enc.encode([p])[0] for p in pieces])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5 * np.abs(alone).max())
    small = VisionEncoder(converted("2.6", "f32").mmproj, n_threads=2, max_batch_bytes=1, blas=blas)
    np.testing.assert_allclose(small.encode(pieces), alone, rtol=0, atol=1e-5 * np.abs(alone).max())
    assert small.native.graph_evaluations == len(pieces)


@pytest.mark.arm64(version="2.6", outtype="f32")  # llama.cpp's own graph, same wheels
@pytest.mark.parametrize("version", ["2.6", "2.5"])  # llama.cpp has no 2.0 vision
@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_agrees_with_libmtmd(converted, version: str, outtype: str) -> None:
    """448x448, same file: cosine >= 0.999 per token. 2.5 is compared under llama.cpp's floor position ids (our
    default follows the original's 1-D quirk, which llama.cpp does not reproduce)."""
    res = converted(version, outtype)
    img = smooth_image()
    m = Mtmd(res.model, res.mmproj)
    try:
        theirs = m.encode(img)[0]
    finally:
        m.close()
    enc = VisionEncoder(res.mmproj, n_threads=2, position_ids="floor_2d" if version == "2.5" else None)
    ours = enc.encode(enc.slice(img))[0]
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.999, cos.min()


def _rewrite(src: Path, dst: Path, *, rename=None, drop_keys=(), set_keys=None, drop_tensors=(), reshape=None) -> Path:
    """Copy an mmproj with edits: tensor renames, removed keys/tensors, changed values or shapes."""
    r = gguf.GGUFReader(src)
    out = GGUFFile(dst, "clip")
    for name, field in r.fields.items():
        if name in ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture") or name in drop_keys:
            continue
        vtype = field.types[0]
        out.writer.add_key_value(name, field.contents(), vtype,
                                 sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
    for name, (value, vtype) in (set_keys or {}).items():
        out.writer.add_key_value(name, value, vtype)
    plan = []
    for t in r.tensors:
        if t.name in drop_tensors:
            continue
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        data = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
        if reshape and t.name in reshape:
            data = np.resize(data, reshape[t.name])
            shape = data.shape
        name = (rename or {}).get(t.name, t.name)
        plan.append(PlannedTensor(name, shape, t.tensor_type, lambda d=data: d))
    out.write_tensors(plan)
    out.commit()
    return dst


def test_standard_and_legacy_files_give_identical_output(converted, tiny_hf, tmp_path: Path) -> None:
    """Our file uses llama.cpp's legacy layout; a file with the standard fc1=ffn_up naming, no query_num key and no
    projector_type (older llama.cpp files) holds the same weights and must encode identically."""
    src = converted("2.6", "f32").mmproj
    n_layers = json.loads((tiny_hf["2.6"] / "config.json").read_text())["vision_config"]["num_hidden_layers"]
    rename = {}
    for i in range(n_layers):
        for part in ("weight", "bias"):
            rename[f"v.blk.{i}.ffn_down.{part}"] = f"v.blk.{i}.ffn_up.{part}"
            rename[f"v.blk.{i}.ffn_up.{part}"] = f"v.blk.{i}.ffn_down.{part}"
    other = _rewrite(src, tmp_path / "standard.gguf", rename=rename,
                     drop_keys=("clip.minicpmv_query_num", "clip.projector_type"))
    a, b = VisionEncoder(src, n_threads=2), VisionEncoder(other, n_threads=2)
    assert a.native.legacy_ffn_names and not b.native.legacy_ffn_names
    pieces = [_pixels(32, 32, 1), _pixels(25, 50, 2)]
    assert np.array_equal(a.encode(pieces), b.encode(pieces))


@pytest.mark.parametrize(("edit", "exc", "message"), [
    ({"set_keys": {"clip.projector_type": ("mlp", gguf.GGUFValueType.STRING)},
      "drop_keys": ("clip.projector_type",)}, ValueError, "projector 'mlp' version 3 is not a supported MiniCPM-V"),
    ({"set_keys": {"clip.minicpmv_version": (9, gguf.GGUFValueType.INT32)}, "drop_keys": ("clip.minicpmv_version",)},
     UnsupportedVersionError, "projector 'resampler' version 9 is not a supported MiniCPM-V"),
    ({"set_keys": {"minicpmv_edge.vision.gelu": ("relu", gguf.GGUFValueType.STRING)},
      "drop_keys": ("minicpmv_edge.vision.gelu",)}, ValueError, "unknown minicpmv_edge.vision.gelu 'relu'"),
    ({"set_keys": {"minicpmv_edge.vision.position_embedding": ("rope", gguf.GGUFValueType.STRING)},
      "drop_keys": ("minicpmv_edge.vision.position_embedding",)}, ValueError,
     "unknown minicpmv_edge.vision.position_embedding 'rope'"),
    ({"drop_tensors": ("v.blk.1.attn_k.bias",)}, ValueError, "missing tensor 'v.blk.1.attn_k.bias'"),
    ({"reshape": {"resampler.kv.weight": (256, 90)}}, ValueError,
     r"tensor 'resampler.kv.weight' has shape \[90, 256\], expected \[96, 256\]"),
    ({"drop_keys": ("clip.vision.image_mean",)}, ValueError, "missing key 'clip.vision.image_mean'"),
    ({"drop_keys": ("clip.vision.block_count",)}, ValueError, "missing key 'clip.vision.block_count'"),
])
def test_malformed_files_are_refused_by_name(converted, tmp_path: Path, edit, exc, message) -> None:
    bad = _rewrite(converted("2.6", "f16").mmproj, tmp_path / "bad.gguf", **edit)
    with pytest.raises(exc, match=message):
        VisionEncoder(bad, n_threads=1)


def test_not_an_mmproj(converted, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not 'clip'"):
        VisionEncoder(converted("2.6", "f16").model)
    (tmp_path / "x.gguf").write_text("hello")
    with pytest.raises(ValueError, match="not a valid GGUF"):
        VisionEncoder(tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="cannot open"):
        VisionEncoder(tmp_path / "missing.gguf")


def test_truncated_files_always_raise(converted, tmp_path: Path) -> None:
    data = converted("2.6", "f16").mmproj.read_bytes()
    rng = np.random.default_rng(0)
    cuts = sorted({0, 1, 4, 8, 24, 100, 1000, 4000, len(data) // 3, len(data) // 2, len(data) - 1,
                   *rng.integers(1, len(data), 40).tolist()})
    p = tmp_path / "cut.gguf"
    for cut in cuts:
        p.write_bytes(data[:cut])
        with pytest.raises(ValueError):
            _core.VisionEncoder(str(p), 1, "cpu")


def test_flipped_header_bytes_raise_or_change_nothing(converted, tmp_path: Path) -> None:
    """Bytes of the header (keys, tensor infos) flipped one at a time: the load fails with ValueError, or the byte
    was one the encoder does not use (a name, a description, the slicing mean) or a low bit of the LayerNorm
    epsilon, and the output is unchanged (to 1e-4)."""
    src = converted("2.6", "f16").mmproj
    data = bytearray(src.read_bytes())
    header = _core.read_gguf_info(str(src)).data_offset
    pieces = [_pixels(5, 7, 3)]
    want = _core.VisionEncoder(str(src), 1, "cpu").encode(pieces)
    p = tmp_path / "flip.gguf"
    outcomes = {"raised": 0, "unchanged": 0}
    for pos in range(0, header, max(1, header // 1500)):
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        p.write_bytes(flipped)
        try:
            enc = _core.VisionEncoder(str(p), 1, "cpu")
        except ValueError:
            outcomes["raised"] += 1
            continue
        got = enc.encode(pieces)
        assert _rel(got, want) < 1e-4, f"byte {pos} changed the output without an error"
        outcomes["unchanged"] += 1
    assert outcomes["raised"] > 100 and outcomes["unchanged"] > 0, outcomes


def test_profile_names_every_op(converted) -> None:
    enc = VisionEncoder(converted("2.6", "f16").mmproj, n_threads=2, profile=True)
    enc.encode([_pixels(8, 8, 0)])
    prof = enc.native.profile
    assert any(k.endswith("x v.blk.#.attn_q.weight") for k in prof) and any("attn-#" in k for k in prof)
    assert all(v >= 0 for v in prof.values())


@pytest.mark.parametrize(("qtype", "min_cos"), [("q8_0", 0.99), ("q4_0", 0.9)])
def test_quantize_mmproj(converted, tmp_path: Path, qtype: str, min_cos: float) -> None:
    src = converted("2.6", "f16")
    out = quantize_mmproj(src.mmproj, tmp_path / f"mmproj-{qtype}.gguf", qtype)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert types["v.blk.0.attn_q.weight"] == qtype.upper() and types["resampler.proj.weight"] == qtype.upper()
    assert types["v.blk.0.ffn_up.weight"] == "F16"  # fc2: rows of 200 (like 4304) are not whole blocks
    assert types["v.patch_embd.weight"] == "F16" and types["v.position_embd.weight"] == "F16"
    assert types["resampler.query"] == "F32" and types["v.blk.0.ln1.weight"] == "F32"
    assert out.stat().st_size < src.mmproj.stat().st_size
    pieces = [_pixels(32, 32, 5)]
    a = VisionEncoder(src.mmproj, n_threads=2).encode(pieces)[0]
    b = VisionEncoder(out, n_threads=2).encode(pieces)[0]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > min_cos
    m = Mtmd(src.model, out)  # llama.cpp loads it too
    try:
        assert m.encode(smooth_image())[0].shape == a.shape
    finally:
        m.close()


def test_quantize_mmproj_errors(converted, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an mmproj"):
        quantize_mmproj(converted("2.6", "f16").model, tmp_path / "o.gguf", "q8_0")
    q8 = quantize_mmproj(converted("2.6", "f16").mmproj, tmp_path / "q8.gguf", "q8_0")
    with pytest.raises(ValueError, match="already Q8_0"):
        quantize_mmproj(q8, tmp_path / "o.gguf", "q4_0")
    with pytest.raises(ValueError, match="unknown mmproj quantization type"):
        quantize_mmproj(q8, tmp_path / "o.gguf", "q2_k")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q8.gguf"]


def test_devices_and_lifetime(converted) -> None:
    path = converted("2.6", "f16").mmproj
    enc = VisionEncoder(path, n_threads=1, device="auto")  # no GPU here: the CPU
    assert enc.native.device == "CPU"
    assert enc.native.weights_bytes > 0 and enc.native.compute_bytes > 0
    with pytest.raises(ValueError, match="unknown device 'tpu9'"):
        VisionEncoder(path, device="tpu9")
    with enc:
        enc.encode([_pixels(2, 2, 0)])
    with pytest.raises(ValueError, match="closed"):
        enc.encode([_pixels(2, 2, 0)])
    with pytest.raises(ValueError, match="multiples of 14"):
        VisionEncoder(path).encode([np.zeros((3, 20, 28), np.float32)])


def test_cli_encode(converted, tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(smooth_image(768, 1024)).save(tmp_path / "in.png")
    exe = cli()
    mmproj = converted("2.5", "f16").mmproj
    out = subprocess.run([exe, "encode", "--mmproj", str(mmproj), str(tmp_path / "in.png"), "-t", "2",
                          "--out", str(tmp_path / "emb.npy")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    emb = np.load(tmp_path / "emb.npy")
    assert emb.shape == (5, 96, 256) and emb.dtype == np.float32  # 1024x768: overview + 2x2 slices
    enc = VisionEncoder(mmproj, n_threads=2)
    sliced = enc.slice(tmp_path / "in.png")
    longest = max(h * w for h, w in sliced.patch_grids)  # 2.5: the image is the original's whole padded batch
    np.testing.assert_array_equal(emb, enc.encode(sliced, pad_to=longest))


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_memory_mapped_weights_give_the_copied_weights_results(converted, outtype: str) -> None:
    mmproj = converted("2.6", outtype).mmproj
    pieces = VisionEncoder(mmproj, n_threads=1).slice(smooth_image(300, 500)).pieces()
    with VisionEncoder(mmproj, n_threads=1) as mapped, VisionEncoder(mmproj, n_threads=1, use_mmap=False) as copied:
        assert mapped.native.weights_mapped and not copied.native.weights_mapped
        np.testing.assert_array_equal(mapped.encode(pieces), copied.encode(pieces))


def _int8_kernel(int8: str) -> str:
    """The kernel an `int8` option picks on this CPU: ours (the fastest: AVX512-VNNI, AVX-VNNI, AVX2), ggml's or
    none."""
    if int8 in ("vnni", "avxvnni", "avx2"):
        return int8
    if int8 == "on" and _core.int8_kernels():
        return _core.int8_kernels()[0]
    return "off" if int8 == "off" else "ggml"


@pytest.mark.arm64(version="2.6", blas=True, int8=("on", "ggml", "off"))  # our NEON kernel; ggml's DOTPROD; dequantized
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("blas", "int8"),
                         [(True, "on"), (True, "avxvnni"), (True, "avx2"), (True, "ggml"), (True, "off"),
                          (False, "on"), (False, "ggml")],
                         ids=["int8+openblas", "avxvnni-int8+openblas", "avx2-int8+openblas", "ggml-int8+openblas",
                              "dequantized+openblas", "int8+pure-ggml", "ggml-int8+pure-ggml"])
def test_q8_0_files_cosine_against_the_f32_reference(converted, refs, version: str, blas: bool, int8: str) -> None:
    """Every q8_0 path (our fastest kernel the CPU has, our AVX-VNNI and AVX2 ones forced, ggml's int8 kernels, the
    dequantizing one; activations quantized per block on the int8 ones): cosine >= 0.999 per output row against the
    PyTorch model on the f32 weights, with or without the OpenBLAS hook."""
    if int8 in ("avxvnni", "avx2") and int8 not in _core.int8_kernels():
        pytest.skip(f"this CPU cannot run our {int8} int8 kernel")
    enc = VisionEncoder(converted(version, "q8_0").mmproj, n_threads=2, blas=blas, int8=int8)
    assert enc.native.uses_int8 == (int8 != "off") and enc.native.int8_kernel == _int8_kernel(int8)
    assert ("int8 dot products" in enc.native.matmul_summary) == (int8 != "off")
    assert_rows_match_reference(enc, refs[version], version, 3, 0.999)


def assert_rows_match_reference(enc: VisionEncoder, ref, version: str, n_grids: int, min_cos: float) -> None:
    """Every output row of the first n_grids piece grids against the PyTorch tower: cosine >= min_cos."""
    for i, (h, w) in enumerate(_grids(enc, n_grids)):
        pix = _pixels(h, w, i)
        got = enc.encode([pix])[0]
        want = ref.encode(pix, rule=RULE[version])
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() >= min_cos, ((h, w), cos.min())


def test_int8_is_chosen_where_the_cpu_has_integer_dot_products(converted) -> None:
    """"auto": our kernel where the CPU has AVX512-VNNI, else ggml's where ggml reports VNNI / DOTPROD / I8MM."""
    features = {n for n, v in _core.cpu_features() if v != "0"}
    has = bool(features & {"AVX512_VNNI", "AVX_VNNI", "DOTPROD", "MATMUL_INT8"})
    ours = _core.int8_kernels()
    auto = VisionEncoder(converted("2.6", "q8_0").mmproj, n_threads=1).native
    assert auto.uses_int8 == (has or bool(ours))
    assert auto.int8_kernel == (ours[0] if ours else "ggml" if has else "off")
    # the graph really takes that path: ggml's op, our quantize + product ops, or our dequantizing sgemm op
    paths = [("ggml", "MUL_MAT:x v.blk.#.attn_q.weight", False), ("off", "CUSTOM:x v.blk.#.attn_q.weight", False)]
    if _core.int8_gemm_available():
        paths.append(("on", "CUSTOM:x v.blk.#.attn_q.weight", True))
    for int8, op, quantizes in paths:
        enc = VisionEncoder(converted("2.6", "q8_0").mmproj, n_threads=1, int8=int8, profile=True)
        enc.encode([_pixels(4, 6, 0)])
        assert op in enc.native.profile, sorted(enc.native.profile)[:8]
        assert any(k.startswith("CUSTOM:quantize ") for k in enc.native.profile) == quantizes
    with pytest.raises(ValueError, match="int8 must be"):
        VisionEncoder(converted("2.6", "q8_0").mmproj, n_threads=1, int8="sometimes")


def test_cli_info_reports_how_the_encoder_runs(converted) -> None:
    """`minicpmv-edge info MMPROJ`: the file's keys, then the path chosen at load per weight type (as ggml's own
    feature report says the CPU allows), mapped weights, and the CPU features."""
    features = [n for n, v in _core.cpu_features() if v != "0"]
    int8 = bool(set(features) & {"AVX512_VNNI", "AVX_VNNI", "DOTPROD", "MATMUL_INT8"}) or bool(_core.int8_kernels())
    out = subprocess.run([cli(), "info", str(converted("2.6", "q8_0").mmproj)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cpu features: " + " ".join(features) in out.stdout
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("vision encoder: "))
    assert ("q8_0 (" in line) and ("int8 dot products" in line) == int8 and "weights: memory-mapped" in line
    ours = _core.int8_kernels()
    assert ("our AVX512-VNNI kernel" in line) == (ours[:1] == ["vnni"])
    assert ("our AVX-VNNI kernel" in line) == (ours[:1] == ["avxvnni"])
    assert ("our AVX2 kernel" in line) == (ours[:1] == ["avx2"])
    assert "clip.projector_type = 'resampler'" in out.stdout
