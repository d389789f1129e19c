"""MiniCPM-Llama3-V 2.5's padded vision batch (the original `get_vllm_embedding` with batch_vision_input): every piece
of the prompt in one zero-padded batch, padding attended, 1-D positions over the padded length. Against the
reference's literal transcription of the original (reference/vision.py encode_padded_batch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_chat import _image

from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.convert import convert_checkpoint
from minicpmv_edge.encoder import VisionEncoder
from reference.pipeline import reference_pipeline
from reference.vision import ReferenceVision


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("blas", [True, False])
def test_unequal_pieces_of_a_prompt_as_the_original_batch(converted, tiny_hf, blas: bool) -> None:
    with VisionEncoder(converted("2.5", "f32").mmproj, n_threads=2, blas=blas) as enc:
        assert enc.padded_batch  # what the converter writes for the released config
        wide = enc.slice(_image(1000, 300, 11))  # overview and slices of different sizes
        other = enc.slice(_image(320, 240, 12))
        pieces = wide.pieces() + other.pieces()
        sizes = {p.shape[1:] for p in pieces}
        assert len(sizes) >= 3, sizes
        L = max((p.shape[1] // 14) * (p.shape[2] // 14) for p in pieces)
        got = enc.encode(pieces, pad_to=L)
        alone = enc.encode(pieces)
    want = np.stack(ReferenceVision(tiny_hf["2.5"]).encode_padded_batch(pieces))
    assert rel(got, want) <= 1e-4
    short = [i for i, p in enumerate(pieces) if (p.shape[1] // 14) * (p.shape[2] // 14) < L]
    assert rel(alone[short], want[short]) > 1e-2  # padding changes these pieces: the test can tell


SCENARIOS = {
    "wide sliced image": lambda: [{"role": "user", "content": [_image(1000, 300, 13), "What does the sign say?"]}],
    "two images of different sizes": lambda: [{"role": "user", "content": [
        _image(320, 240, 14), _image(900, 500, 15), "Compare them."]}],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_greedy_tokens_equal_the_original(converted, tiny_hf, scenario: str) -> None:
    msgs = SCENARIOS[scenario]()
    ref = reference_pipeline(tiny_hf["2.5"])
    want_ids, want_logits = ref.generate(msgs, n_tokens=24)
    with MiniCPMV(converted("2.5", "f32").model, converted("2.5", "f32").mmproj, n_threads=2, kv_type="f32",
                  flash_attn=False) as m:
        m.chat(msgs, temperature=0, repetition_penalty=1.0, max_new_tokens=24)
        assert rel(m.last.first_logits, want_logits) <= 1e-3
        assert m.last.tokens == want_ids


@pytest.mark.parametrize(("second_size", "grows"), [((1000, 300), True), ((1344, 600), False)])
def test_a_second_turn_image_and_the_first_images_rows(converted, tiny_hf, second_size, grows: bool) -> None:
    """The first picture (300x300: one piece of 1024 patches) is encoded again when the second turn's picture has a
    longer piece (1000x300: 1044 patches), and kept (cache and KV) when it has none (1344x600: at most 1014)."""
    first = [{"role": "user", "content": [_image(300, 300, 16), "What is this?"]}]
    second = [*first, {"role": "assistant", "content": "A pattern."},
              {"role": "user", "content": [_image(*second_size, 17), "And this one?"]}]
    ref = reference_pipeline(tiny_hf["2.5"])
    with MiniCPMV(converted("2.5", "f32").model, converted("2.5", "f32").mmproj, n_threads=2, kv_type="f32",
                  flash_attn=False) as m:
        for msgs in (first, second):
            want_ids, want_logits = ref.generate(msgs, n_tokens=16)
            m.chat(msgs, temperature=0, repetition_penalty=1.0, max_new_tokens=16)
            assert rel(m.last.first_logits, want_logits) <= 1e-3
            assert m.last.tokens == want_ids
        ids, _ = ref.prompt(second)
        first_image_row = ids.index(ref.tok.convert_tokens_to_ids("<unk>"))
        if grows:  # encoded again, so the KV cache keeps only the text before it
            assert m.last.reused_tokens <= first_image_row and m.last.pieces_encoded == m.last.pieces
        else:
            assert m.last.reused_tokens > first_image_row + 96 and m.last.pieces_encoded == m.last.pieces - 1


def test_a_checkpoint_without_batch_vision_input_encodes_each_piece_alone(tiny_hf, tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    shutil.copytree(tiny_hf["2.5"], hf)
    cfg = json.loads((hf / "config.json").read_text())
    cfg["batch_vision_input"] = False
    (hf / "config.json").write_text(json.dumps(cfg))
    res = convert_checkpoint(hf, tmp_path / "gguf", "f32", progress=False)
    msgs = SCENARIOS["two images of different sizes"]()
    ref = reference_pipeline(hf)  # reads the same config: per-piece "flat" encoding
    want_ids, want_logits = ref.generate(msgs, n_tokens=16)
    with MiniCPMV(res.model, res.mmproj, n_threads=2, kv_type="f32", flash_attn=False) as m:
        assert not m.encoder.padded_batch
        m.chat(msgs, temperature=0, repetition_penalty=1.0, max_new_tokens=16)
        assert rel(m.last.first_logits, want_logits) <= 1e-3
        assert m.last.tokens == want_ids


def test_pad_to_is_checked(converted) -> None:
    with VisionEncoder(converted("2.5", "f32").mmproj, n_threads=1) as enc:
        pieces = enc.slice(_image(320, 240, 18)).pieces()
        n = (pieces[0].shape[1] // 14) * (pieces[0].shape[2] // 14)
        with pytest.raises(ValueError, match="pad_to"):
            enc.encode(pieces, pad_to=n - 1)
        with pytest.raises(ValueError, match="pad_to"):
            enc.encode(pieces, pad_to=enc.slice_config.patch_limit + 1)
    with VisionEncoder(converted("2.6", "f32").mmproj, n_threads=1) as enc26:
        assert not enc26.padded_batch
        pieces = enc26.slice(_image(320, 240, 18)).pieces()
        with pytest.raises(ValueError, match="1-D position rule"):
            enc26.encode(pieces, pad_to=max((p.shape[1] // 14) * (p.shape[2] // 14) for p in pieces))


def _png_with_late_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    """A PNG whose EXIF orientation chunk (eXIf) comes after its pixels: Pillow reads it only with them."""
    import io
    import struct
    import zlib

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, "PNG")
    data = buf.getvalue()
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + chunk + data[iend:]


def test_a_size_its_header_does_not_tell(converted) -> None:
    """The batch length comes from the header sizes; an image whose decoded size differs (an EXIF orientation after
    a PNG's pixels) has it derived again: the answer is the one for the same pixels given upright."""
    from minicpmv_edge.image import Image, image_size, load_rgb

    stored = _image(200, 560, 21)  # 200 wide, 560 tall as stored; upright it is 560 x 200
    png = _png_with_late_orientation(np.asarray(stored), 6)
    upright = load_rgb(png)
    assert image_size(png) == (200, 560) and upright.shape == (200, 560, 3)  # the header cannot tell
    res = converted("2.5", "f32")
    with MiniCPMV(res.model, res.mmproj, n_threads=2, kv_type="f32", flash_attn=False) as m:
        m.chat([{"role": "user", "content": [upright, "What is it?"]}], temperature=0, max_new_tokens=6)
        want_tokens, want_logits = m.last.tokens, m.last.first_logits
        m.chat([{"role": "user", "content": [Image(png), "What is it?"]}], temperature=0, max_new_tokens=6)
        assert m.last.tokens == want_tokens and rel(m.last.first_logits, want_logits) <= 1e-5
