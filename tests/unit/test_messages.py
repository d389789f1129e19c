"""Messages -> turns (messages.py), with the library's rules and the server's (server/request.py): roles, system
placement, content shapes, data: URLs, the refusal of downloads, the server's file policy and names, fingerprints."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from minicpmv_edge.image import Image
from minicpmv_edge.messages import MessageError, normalize
from minicpmv_edge.server.errors import APIError
from minicpmv_edge.server.request import answer_fingerprint, parse_chat_request
from minicpmv_edge.video import Video

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgAB4iG8MwAAAABJRU5ErkJggg==")


def test_library_shapes() -> None:
    arr = np.zeros((4, 4, 3), np.uint8)
    turns = normalize([{"role": "user", "content": [arr, "What?", Path("clip.mp4"), Path("x.png"),
                                                     {"type": "image_url", "image_url": {"url": "data:image/png;"
                                                      "base64," + base64.b64encode(PNG).decode()}}]}], "Be brief.")
    assert [t.role for t in turns] == ["system", "user"]
    kinds = [type(p).__name__ for p in turns[1].parts]
    assert kinds == ["Image", "str", "Video", "Image", "Image"] and turns[1].parts[4].source == PNG
    assert turns.text_chars == len("Be brief.") + len("What?")


@pytest.mark.parametrize(("msgs", "words"), [
    ([], "non-empty list"),
    ([{"role": "robot", "content": "x"}], "message 0: unknown role 'robot'"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "a system message can only be the first"),
    ([{"role": "assistant", "content": "x"}], "the first message"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "the last message must be from"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}],
     "does not download"),
    ([{"role": "user", "content": [{"type": "audio"}]}], "unsupported content part type 'audio'"),
    ([{"role": "user", "content": "\ud800"}], "not valid Unicode"),
    ([{"role": "user", "content": [3]}], "unsupported content item of type int"),
])
def test_library_refusals(msgs: list, words: str) -> None:
    with pytest.raises(MessageError, match=words):
        normalize(msgs)


def _body(*parts: dict, **kw) -> dict:
    return {"messages": [{"role": "developer", "content": "Be brief."},
                         {"role": "user", "content": [*parts, {"type": "text", "text": "Hi"}]}], **kw}


def _image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def test_server_rules(tmp_path: Path) -> None:
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "a.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    data = "data:image/png;base64," + base64.b64encode(PNG).decode()
    req = parse_chat_request(_body(_image_part(data), _image_part("a.png"),
                                   {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}),
                             tmp_path / "allowed")
    roles = [t.role for t in req.turns]
    parts = req.turns[1].parts
    assert roles == ["system", "user"]  # developer is system
    assert isinstance(parts[0], Image) and parts[0].name == "messages[1].content[0]" and parts[0].source == PNG
    assert isinstance(parts[1], Image) and parts[1].source == (tmp_path / "allowed" / "a.png").resolve()
    assert isinstance(parts[2], Video) and parts[2].source == b"\0\0\0" and parts[2].name == "messages[1].content[2]"
    for url, words in [(str(tmp_path / "secret.png"), "is outside the directory this server may read"),
                       ("../secret.png", "is outside the directory"), ("b.png", "no such file"),
                       ("https://x/a.png", "does not download")]:
        with pytest.raises(APIError, match=words) as e:
            parse_chat_request(_body(_image_part(url)), tmp_path / "allowed")
        assert str(tmp_path) not in e.value.message.replace(url, "")  # only what the request named itself
    with pytest.raises(APIError, match="local files are not allowed"):
        parse_chat_request(_body(_image_part("a.png")), None)
    with pytest.raises(APIError, match=r"messages\[1\].content\[0\]: a content part must be an object"):
        parse_chat_request({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": ["x"]}]},
                           None)


def test_fingerprints_follow_the_messages() -> None:
    a = parse_chat_request(_body(), None).fingerprint
    b = parse_chat_request({"messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                                         {"role": "user", "content": "Hi"}]}, None).fingerprint
    assert a == b  # the same messages in another shape
    c = parse_chat_request({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes."},
                                         {"role": "user", "content": "More"}]}, None).fingerprint
    assert c[1] == answer_fingerprint("Yes.") and len(set(c)) == 3
