"""MiniCPM-V 4.6's vision encoder (cpp/graphs/minicpmv4_6.cpp) against transformers 5.23.0's own model, run in a
child under that release (reference/v4_6_vision.py): a tiny tower of unusual dimensions (3 heads of 32, MLP 200,
5 layers, insert layer 2, a 42 x 42 position table, a 64-wide language model) with seeded random weights, in both
downsample modes, from llama.cpp's 4.6 mmproj layout.

Until the converter writes 4.6 files, `write_mmproj` below writes them from the reference's state dict with the
`gguf` package, under llama.cpp's names (llama.cpp tools/mtmd/clip-impl.h) and keys (its conversion/minicpm.py)."""

from __future__ import annotations

import platform
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from minicpmv_edge._native import _core
from minicpmv_edge.encoder import VisionEncoder
from reference import isolated
from reference.v4_6_vision import TINY

SEED = 46
# pieces as (width, height) in pixels: square, landscape, an extreme strip, a wide one; 364 x 560 has a side of
# 26 patches, which only 4x can encode
SIZES = {"16x": [(448, 448), (560, 392), (168, 1400), (616, 336)],
         "4x": [(448, 448), (560, 392), (168, 1400), (616, 336), (364, 560)]}


def _pixels(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (3, h, w)).astype(np.float32)


PIECES = {mode: [_pixels(w, h, i) for i, (w, h) in enumerate(sizes)] for mode, sizes in SIZES.items()}


@pytest.fixture(scope="module")
def ref() -> dict:
    """transformers' image features of PIECES, with the f32 weights and with them rounded to f16."""
    def run(f16: bool) -> dict:
        return isolated.call("reference.v4_6_vision:run", TINY, SEED, PIECES, f16=f16, env=isolated.TRANSFORMERS_5_23,
                             version="5.23.0")

    return {"f32": run(False), "f16": run(True)}


# transformers name (after model.vision_tower. / model.merger.) -> llama.cpp's
_NAMES = [("embeddings.patch_embedding", "v.patch_embd"), ("embeddings.position_embedding", "v.position_embd"),
          ("post_layernorm", "v.post_ln"), ("vit_merger.layer_norm1", "v.vit_merger.ln1"),
          ("vit_merger.self_attn.q_proj", "v.vit_merger.attn_q"),
          ("vit_merger.self_attn.k_proj", "v.vit_merger.attn_k"),
          ("vit_merger.self_attn.v_proj", "v.vit_merger.attn_v"),
          ("vit_merger.self_attn.out_proj", "v.vit_merger.attn_out"), ("vit_merger.pre_norm", "v.vit_merger.ds_ln"),
          ("vit_merger.linear_1", "v.vit_merger.ds_ffn_up"), ("vit_merger.linear_2", "v.vit_merger.ds_ffn_down"),
          ("mlp.0.pre_norm", "mm.input_norm"), ("mlp.0.linear_1", "mm.up"), ("mlp.0.linear_2", "mm.down")]
_LAYER = [("layer_norm1", "ln1"), ("layer_norm2", "ln2"), ("self_attn.q_proj", "attn_q"),
          ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"), ("self_attn.out_proj", "attn_out"),
          ("mlp.fc1", "ffn_up"), ("mlp.fc2", "ffn_down")]


def gguf_name(hf: str) -> str:
    name = hf.removeprefix("model.vision_tower.").removeprefix("model.merger.")
    stem, kind = name.rsplit(".", 1)
    if stem.startswith("encoder.layers."):
        i, rest = stem.removeprefix("encoder.layers.").split(".", 1)
        return f"v.blk.{i}.{dict(_LAYER)[rest]}.{kind}"
    return f"{dict(_NAMES)[stem]}.{kind}"


def write_mmproj(path: Path, state: dict, outtype: str = "f32", merger: bool = True, drop: tuple[str, ...] = (),
                 keys: dict | None = None, shapes: dict | None = None) -> Path:
    """A 4.6 mmproj as llama.cpp's converter writes it (scale_factor 4 with the insert merger's tensors, or 2
    without them), plus our position grid key; `drop` leaves tensors out, `keys` replaces (None: removes) keys,
    `shapes` replaces tensors' values. Matrices and embeddings are f16 / q8_0 as asked (q8_0 where rows are whole
    blocks, else f16), vectors f32."""
    t = TINY
    kv = {"clip.projector_type": "minicpmv4_6", "clip.has_vision_encoder": True, "clip.has_text_encoder": False,
          "clip.vision.image_size": 448, "clip.vision.patch_size": t["patch_size"],
          "clip.vision.embedding_length": t["hidden_size"], "clip.vision.feed_forward_length": t["intermediate_size"],
          "clip.vision.block_count": t["num_hidden_layers"], "clip.vision.attention.head_count":
          t["num_attention_heads"], "clip.vision.attention.layer_norm_epsilon": t["layer_norm_eps"],
          "clip.vision.projection_dim": t["llm_hidden"], "clip.vision.image_mean": [0.5, 0.5, 0.5],
          "clip.vision.image_std": [0.5, 0.5, 0.5], "clip.use_gelu": True,
          "clip.vision.projector.scale_factor": 4 if merger else 2,
          "clip.vision.wa_layer_indexes": [t["insert_layer_id"]],
          "minicpmv_edge.vision.position_grid": t["image_size"] // t["patch_size"]}
    kv.update(keys or {})
    w = gguf.GGUFWriter(path, "clip")
    for k, v in kv.items():
        if v is None:
            continue
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v[0], float):
            w.add_array(k, v)
        else:
            w.add_key_value(k, v, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.INT32)
    for hf, a in state.items():
        name = gguf_name(hf)
        if name in drop or (not merger and name.startswith("v.vit_merger.")):
            continue
        a = (shapes or {}).get(name, a)
        if a.ndim == 1 or outtype == "f32":
            w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))
        elif outtype == "q8_0" and a.ndim == 2 and a.shape[-1] % 32 == 0 and "position_embd" not in name:
            w.add_tensor(name, gguf.quants.quantize(a, QT.Q8_0), raw_dtype=QT.Q8_0)
        else:
            w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def files(ref, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("v4_6")
    st = ref["f32"]["state"]
    return {"f32": write_mmproj(d / "f32.gguf", st), "f16": write_mmproj(d / "f16.gguf", st, "f16"),
            "q8_0": write_mmproj(d / "q8_0.gguf", st, "q8_0"),
            "4x-only": write_mmproj(d / "4x.gguf", st, merger=False)}


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def _split(enc: VisionEncoder, rows: np.ndarray, mode: str) -> list[np.ndarray]:
    counts = [enc.piece_tokens(w, h, mode) for w, h in SIZES[mode]]
    assert rows.shape == (sum(counts), TINY["llm_hidden"])
    return np.split(rows, np.cumsum(counts)[:-1])


@pytest.mark.arm64
def test_position_ids_reproduce_transformers() -> None:
    """transformers' float32 i / n bucketized against float32 arange(1/side, 1, 1/side), for every side up to 400
    and several table sides; for 70 and 42 it equals llama.cpp's exact floor (the fact sheet's [run] claim)."""
    sides = [70, 42, 30, 27, 64, 17]
    n = list(range(1, 401))
    want = isolated.call("reference.v4_6_vision:nearest_position_ids", [(h, 1) for h in n], sides,
                         env=isolated.TRANSFORMERS_5_23, version="5.23.0")
    for side in sides:
        for h, ids in zip(n, want[side], strict=True):
            got = _core.position_ids(h, 1, side, _core.PosRule.nearest_2d)
            if np.array_equal(got, ids):
                continue
            # torch's float32 arange on aarch64 rounds some boundaries k / side differently from x86-64, so where
            # i / h is exactly a boundary there the original itself puts i one bucket lower. Ours is x86-64's on
            # every CPU; the released grid (70, like 42) has no such tie.
            odd = np.nonzero(got != ids)[0]
            assert platform.machine() == "aarch64" and side not in (70, 42), (side, h)
            assert all(i * side % h == 0 for i in odd) and np.all(got[odd] - ids[odd] == side), (side, h)
    for side in (70, 42):
        for h in n:
            assert np.array_equal(_core.position_ids(h, 1, side, _core.PosRule.nearest_2d),
                                  _core.position_ids(h, 1, side, _core.PosRule.floor_2d)), (side, h)
    # rows and columns: ids[i * w + j] = b(i) * side + b(j)
    rows, cols = (_core.position_ids(h, w, 42, _core.PosRule.nearest_2d) for h, w in ((12, 1), (1, 7)))
    assert np.array_equal(_core.position_ids(12, 7, 42, _core.PosRule.nearest_2d), (rows[:, None] + cols).ravel())


@pytest.mark.arm64
@pytest.mark.parametrize("outtype", ["f32", "f16"])
@pytest.mark.parametrize("blas", [True, False], ids=["openblas", "ggml"])
def test_parity_with_transformers(ref, files, outtype: str, blas: bool) -> None:
    """Every piece in both modes within 1e-5 of transformers, relative to the largest value (about 1e-6 seen; f16
    files against the reference with the same f16-rounded weights). Tight on purpose: erf instead of tanh GELU in
    the insert merger moves the tiny model by 8e-5 only. ggml's own f16 matmuls round the activations to f16 too:
    that path gets 2e-3 (5e-4 seen)."""
    enc = VisionEncoder(files[outtype], n_threads=2, blas=blas)
    assert enc.native.uses_blas == blas
    # (on aarch64 ggml's f16 dot products also accumulate in f16: 2.3e-3 seen)
    tol = (5e-3 if platform.machine() == "aarch64" else 2e-3) if outtype == "f16" and not blas else 1e-5
    worst = 0.0
    for mode in ("16x", "4x"):
        got = _split(enc, enc.encode_rows(PIECES[mode], downsample=mode), mode)
        for (w, h), g, want in zip(SIZES[mode], got, ref[outtype]["out"][mode], strict=True):
            assert g.shape == want.shape == (enc.piece_tokens(w, h, mode), TINY["llm_hidden"])
            worst = max(worst, _rel(g, want))
            assert _rel(g, want) <= tol, (mode, (w, h), _rel(g, want))
    print(f"{outtype} {'openblas' if blas else 'ggml'}: worst relative error {worst:.2e}")


def test_rows_modes_and_hparams(ref, files) -> None:
    enc = VisionEncoder(files["f32"], n_threads=2)
    hp = enc.hparams
    assert (hp["merger"], hp["insert_layer"], hp["position_grid"], hp["downsample_modes"], hp["default_downsample"]) \
        == ("minicpmv4_6", 2, 42, ["16x", "4x"], "16x")
    # the family's rule for files without the key; ours without any default: transformers' own
    assert hp["position_ids"] == (enc.projector.position_ids or "nearest_2d") and hp["n_out"] == enc.hidden == 64
    assert _core.VisionEncoder(str(files["f32"]), 1, "cpu").hparams["position_ids"] == "nearest_2d"
    assert enc.query_num == 0 and enc.merger == "minicpmv4_6" and enc.downsample_modes == ("16x", "4x")
    assert enc.piece_tokens(448, 448) == enc.piece_tokens(448, 448, "16x") == 64
    assert enc.piece_tokens(448, 448, "4x") == 256 and enc.piece_tokens(364, 560, "4x") == 13 * 20
    # the default mode is 16x; equal pieces keep encode()'s [n, rows, hidden]; unequal ones go to encode_rows
    rows = enc.encode_rows(PIECES["16x"])
    np.testing.assert_array_equal(rows, enc.encode_rows(PIECES["16x"], downsample="16x"))
    same = enc.encode([PIECES["16x"][0], PIECES["16x"][0]])
    assert same.shape == (2, 64, 64)
    np.testing.assert_allclose(same[1], ref["f32"]["out"]["16x"][0], rtol=0, atol=1e-4 * np.abs(same).max())
    with pytest.raises(ValueError, match="encode_rows"):
        enc.encode(PIECES["16x"])
    # pieces batched by size and mode equal pieces alone
    alone = np.concatenate([enc.encode_rows([p], downsample="4x") for p in PIECES["4x"]])
    np.testing.assert_allclose(enc.encode_rows(PIECES["4x"] * 2, downsample="4x"), np.concatenate([alone, alone]),
                               rtol=0, atol=1e-5 * np.abs(alone).max())
    # an image: sliced in the mode's unit (56 px in 16x, 28 in 4x), every piece's rows
    rgb = (np.random.default_rng(3).uniform(0, 255, (500, 700, 3))).astype(np.uint8)
    for mode in ("16x", "4x"):
        _, n, emb = enc.encode_image(rgb, 4, downsample=mode)
        c = enc.slice_config_for(4, downsample=mode)
        assert c.size_unit == 14 * {"16x": 4, "4x": 2}[mode]
        sizes = enc.slice(rgb, 4, downsample=mode).sizes
        assert n == len(sizes) and emb.shape == (sum(enc.piece_tokens(w, h, mode) for w, h in sizes), 64)


@pytest.mark.arm64
def test_4x_only_file(ref, files) -> None:
    """llama.cpp's "4x" file (scale_factor 2, no vit_merger tensors) runs 4x by default and refuses 16x."""
    enc = VisionEncoder(files["4x-only"], n_threads=2)
    assert enc.downsample_modes == ("4x",) and enc.default_downsample == "4x"
    got = _split(enc, enc.encode_rows(PIECES["4x"]), "4x")
    for g, want in zip(got, ref["f32"]["out"]["4x"], strict=True):
        assert _rel(g, want) <= 1e-5
    for call in (lambda: enc.encode_rows(PIECES["16x"], downsample="16x"), lambda: enc.piece_tokens(448, 448, "16x"),
                 lambda: enc.slice_config_for(9, downsample="16x")):
        with pytest.raises(ValueError, match=r"4x\.gguf: 16x mode needs the insert merger"):
            call()


def test_piece_and_mode_errors(files, converted) -> None:
    enc = VisionEncoder(files["f32"], n_threads=1)
    with pytest.raises(ValueError, match=r"piece 1 \(84x112 pixels\).*16x mode its sides must be multiples of 4 "
                                         r"patches \(56 pixels\)"):
        enc.encode_rows([PIECES["16x"][0], _pixels(84, 112, 0)])
    with pytest.raises(ValueError, match=r"4x mode its sides must be multiples of 2 patches \(28 pixels\)"):
        enc.encode_rows([_pixels(42, 56, 0)], downsample="4x")
    with pytest.raises(ValueError, match="multiples of 4 patches"):
        enc.piece_tokens(84, 112)
    with pytest.raises(ValueError, match="downsample must be '16x', '4x' or None"):
        enc.encode_rows(PIECES["4x"], downsample="8x")
    with pytest.raises(ValueError, match="sides must be positive multiples of 14"):
        enc.encode_rows([_pixels(57, 56, 0)])
    with pytest.raises(ValueError, match="padded pieces"):
        enc.encode_rows(PIECES["16x"][:1], pad_to=1024)
    # a resampler file has no modes
    v26 = VisionEncoder(converted("2.6", "f32").mmproj, n_threads=1)
    assert v26.hparams["merger"] == "resampler" and v26.downsample_modes == () and v26.default_downsample is None
    assert v26.piece_tokens(448, 448) == v26.query_num
    with pytest.raises(ValueError, match=r"downsample mode 4x asked of a resampler file"):
        v26.encode_rows([_pixels(448, 448, 0)], downsample="4x")


def test_malformed_files(ref, tmp_path: Path) -> None:
    st = ref["f32"]["state"]
    D, F = TINY["hidden_size"], TINY["intermediate_size"]
    cases = [
        ({"drop": ("v.vit_merger.ds_ffn_up.weight",)}, r"missing tensor 'v\.vit_merger\.ds_ffn_up\.weight'"),
        ({"drop": ("mm.down.weight",)}, r"missing tensor 'mm\.down\.weight'"),
        ({"drop": ("mm.input_norm.bias",)}, r"missing tensor 'mm\.input_norm\.bias'"),
        ({"shapes": {"v.vit_merger.ds_ffn_up.weight": np.zeros((4 * F + 1, 4 * D), np.float32)}},
         r"tensor 'v\.vit_merger\.ds_ffn_up\.weight' has shape \[384, 801\], expected \[384, 800\]"),
        ({"shapes": {"mm.up.weight": np.zeros((4 * D, D), np.float32)}}, r"'mm\.up\.weight' has shape"),
        ({"keys": {"clip.vision.projector.scale_factor": 3}}, r"scale_factor = 3: a minicpmv4_6 file has 4"),
        ({"keys": {"clip.vision.wa_layer_indexes": [5]}},
         r"wa_layer_indexes = \[5\]: the insert layer is outside the tower's layers 0 \.\. 4"),
        ({"keys": {"clip.vision.wa_layer_indexes": None}}, r"missing key 'clip\.vision\.wa_layer_indexes'"),
        ({"keys": {"minicpmv_edge.vision.position_grid": 70}},
         r"'v\.position_embd\.weight' has 1764 rows, but minicpmv_edge\.vision\.position_grid .* is 70"),
        ({"keys": {"clip.vision.projection_dim": 65}}, r"projection_dim does not match mm\.down\.weight \(64\)"),
        ({"merger": False, "keys": {"minicpmv_edge.vision.downsample_mode": "16x"}},
         r"downsample_mode is '16x', but the file has no insert merger"),
        ({"keys": {"minicpmv_edge.vision.padded_batch": True}}, r"minicpmv_edge\.vision\.padded_batch is true"),
    ]
    for i, (edit, message) in enumerate(cases):
        path = write_mmproj(tmp_path / f"bad{i}.gguf", st, **edit)
        with pytest.raises(ValueError, match=message) as e:
            VisionEncoder(path, n_threads=1)
        assert f"bad{i}.gguf" in str(e.value)


def test_llamacpp_file_gets_the_family_grid(ref, tmp_path: Path) -> None:
    """Without our position grid key the table's side comes from the family default (70 for 4.6; a file whose table
    disagrees is refused), else from the square table itself."""
    path = write_mmproj(tmp_path / "llama.gguf", ref["f32"]["state"], keys={"minicpmv_edge.vision.position_grid": None})
    assert VisionEncoder(path, n_threads=1).hparams["position_grid"] == 42
    with pytest.raises(ValueError, match=r"1764 rows, but minicpmv_edge\.vision\.position_grid .* is 70"):
        _core.VisionEncoder(str(path), 1, "cpu", {"minicpmv_edge.vision.position_grid": "70"})
    assert _core.VisionEncoder(str(path), 1, "cpu", {"minicpmv_edge.vision.position_grid": "42"}).hparams[
        "position_grid"] == 42


@pytest.mark.arm64
def test_q8_0_on_the_int8_path(files) -> None:
    """A q8_0 file on our int8 kernel (every matrix of the tower and both mergers packed) against our own f16 result:
    cosine >= 0.999 per row."""
    f16 = VisionEncoder(files["f16"], n_threads=2)
    q8 = VisionEncoder(files["q8_0"], n_threads=2)
    summary = q8.native.matmul_summary
    n_matrices = 6 * TINY["num_hidden_layers"] + 6 + 2  # tower, insert merger (q k v out up down), final merger
    assert sum(int(part.split(" (")[1].split(" ")[0]) for part in summary.split("; ") if " matrices)" in part) \
        == n_matrices, summary
    if _core.int8_gemm_available():
        assert q8.native.int8_kernel == "vnni" and "the file's blocks" in summary and q8.native.packed_bytes > 0
    for mode in ("16x", "4x"):
        a, b = f16.encode_rows(PIECES[mode], downsample=mode), q8.encode_rows(PIECES[mode], downsample=mode)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() >= 0.999, (mode, cos.min())


@pytest.mark.arm64
@pytest.mark.parametrize(("outtype", "blas"), [("f32", False), ("q8_0", True), ("f32", True)],
                         ids=["f32-ggml", "q8_0-int8", "f32-openblas"])
def test_thread_counts_give_identical_bits(files, outtype: str, blas: bool) -> None:
    results = []
    for n in (1, 2, 3):
        enc = VisionEncoder(files[outtype], n_threads=n, blas=blas)
        results.append([enc.encode_rows(PIECES[m], downsample=m) for m in ("16x", "4x")])
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert np.array_equal(a, b)
