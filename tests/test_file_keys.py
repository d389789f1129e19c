"""Every key of ours in an mmproj is read: changing its value changes what the runtime computes, and a file without
it (llama.cpp's) gets its family's default. (The converter writes no key that nothing reads.)"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from test_encoder import _pixels, _rewrite

from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.encoder import VisionEncoder

STR, BOOL, U32 = gguf.GGUFValueType.STRING, gguf.GGUFValueType.BOOL, gguf.GGUFValueType.UINT32
PIECES = [_pixels(25, 49, 1), _pixels(5, 10, 2)]  # 25 and 49 patches a side: the NaViT buckets and floor differ


def _encode(path: Path) -> np.ndarray:
    return VisionEncoder(path, n_threads=2).encode(PIECES)


@pytest.mark.parametrize(("key", "value", "vtype"), [
    ("minicpmv_edge.vision.position_ids", "floor_2d", STR),
    ("minicpmv_edge.vision.gelu", "erf", STR),
    ("minicpmv_edge.vision.position_embedding", "resampled_grid", STR),
])
def test_graph_keys_change_the_graph(converted, tmp_path: Path, key: str, value: str, vtype) -> None:
    src = converted("2.6", "f32").mmproj
    want = _encode(src)
    changed = _encode(_rewrite(src, tmp_path / "changed.gguf", drop_keys=(key,), set_keys={key: (value, vtype)}))
    assert not np.allclose(changed, want, atol=1e-4), key
    missing = _encode(_rewrite(src, tmp_path / "missing.gguf", drop_keys=(key,)))  # a llama.cpp file
    assert np.array_equal(missing, want), key


def test_padded_batch_key(converted, tmp_path: Path) -> None:
    key = "minicpmv_edge.vision.padded_batch"
    src = converted("2.5", "f32").mmproj
    assert VisionEncoder(src).padded_batch
    assert not VisionEncoder(_rewrite(src, tmp_path / "off.gguf", drop_keys=(key,),
                                      set_keys={key: (False, BOOL)})).padded_batch
    assert VisionEncoder(_rewrite(src, tmp_path / "none.gguf", drop_keys=(key,))).padded_batch  # the family's
    other = converted("2.6", "f32").mmproj
    with pytest.raises(ValueError, match="a padded vision batch goes with 1-D position ids only"):
        VisionEncoder(_rewrite(other, tmp_path / "bad.gguf", drop_keys=(key,), set_keys={key: (True, BOOL)}))


def test_prompt_default_keys(converted, tmp_path: Path) -> None:
    """The checkpoint's max_slice_nums and use_image_id, carried by the converter, are chat()'s defaults."""
    res = converted("2.6", "f16")
    msgs = [{"role": "user", "content": [np.full((1008, 1344, 3), 120, np.uint8), "What is it?"]}]

    def ask(mmproj: Path) -> tuple[int, int]:
        with MiniCPMV(res.model, mmproj, n_threads=2) as m:
            m.chat(msgs, max_new_tokens=1, temperature=0)
            return m.last.pieces, m.last.prompt_tokens

    pieces, tokens = ask(res.mmproj)
    keys = ("minicpmv_edge.max_slice_nums", "minicpmv_edge.use_image_id")
    two = _rewrite(res.mmproj, tmp_path / "two.gguf", drop_keys=keys,
                   set_keys={keys[0]: (2, U32), keys[1]: (True, BOOL)})
    no_ids = _rewrite(res.mmproj, tmp_path / "no_ids.gguf", drop_keys=keys[1:], set_keys={keys[1]: (False, BOOL)})
    assert pieces > 3 and ask(two)[0] == 3  # 1344x1008 with max_slice_nums 2: overview + 2 slices
    assert ask(no_ids) == (pieces, tokens - 3)  # <image_id>, "0", </image_id>: 3 tokens fewer
    with pytest.raises(ValueError, match=r"no_ids_2_0\.gguf: minicpmv_edge\.use_image_id is true, but .* has no "
                                         r"<image_id> special token"):  # 2.0's vocabulary has no <image_id>
        src = converted("2.0", "f16")
        MiniCPMV(src.model, _rewrite(src.mmproj, tmp_path / "no_ids_2_0.gguf", drop_keys=keys[1:],
                                     set_keys={keys[1]: (True, BOOL)}), n_threads=2)


def test_square_and_stored_key_keys(converted, tmp_path: Path) -> None:
    """MiniCPM-V 1.0's two keys: one square piece per image, and the resampler's keys from its stored table."""
    slicing, keys = "minicpmv_edge.vision.slicing", "minicpmv_edge.resampler.key_positions"
    src = converted("1.0", "f32").mmproj
    wide = np.random.default_rng(0).integers(0, 256, (300, 1200, 3), dtype=np.uint8)

    def encode(path: Path) -> tuple:
        enc = VisionEncoder(path, n_threads=2)
        grid, n, emb = enc.encode_image(wide, max_slice_nums=9)
        return grid, n, emb

    grid, n, want = encode(src)
    assert (grid, n) == (None, 1)
    sincos = encode(_rewrite(src, tmp_path / "sincos.gguf", drop_keys=(keys,), set_keys={keys: ("sincos", STR)}))
    assert sincos[:2] == (None, 1) and not np.allclose(sincos[2], want, atol=1e-4)
    sliced = encode(_rewrite(src, tmp_path / "slices.gguf", drop_keys=(slicing, keys),
                             set_keys={slicing: ("slices", STR), keys: ("sincos", STR)}))
    assert sliced[0] is not None and sliced[1] > 1  # the 4:1 image sliced as 2.0 slices it
    missing = encode(_rewrite(src, tmp_path / "missing.gguf", drop_keys=(slicing, keys)))  # the family's defaults
    assert missing[:2] == (None, 1) and np.array_equal(missing[2], want)
    with pytest.raises(ValueError, match="key_positions is 'stored', which needs one square piece per image"):
        encode(_rewrite(src, tmp_path / "bad.gguf", drop_keys=(slicing,), set_keys={slicing: ("slices", STR)}))
