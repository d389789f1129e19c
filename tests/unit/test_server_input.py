"""What the server refuses before any model work: a body's JSON shape (server/body.py), the Host and Origin a
request names (server/guard.py), and chat()'s keywords (chat_options.py)."""

from __future__ import annotations

import json

import pytest

from minicpmv_edge.chat_options import chat_params
from minicpmv_edge.families import FAMILIES
from minicpmv_edge.server.body import check_shape, parse_json
from minicpmv_edge.server.errors import APIError
from minicpmv_edge.server.guard import Guard
from minicpmv_edge.server.request import parse_chat_request


@pytest.mark.parametrize(("body", "ok"), [
    (json.dumps({"messages": [{"role": "user", "content": "a \\\"quoted\\\" [text], {with} commas"}] * 10}), True),
    (json.dumps({"x": "\\" * 1000 + '"'}), True),  # escapes pair from the left
    ("[" * 64 + "]" * 64, True),
    ("[" * 65 + "]" * 65, False),
    ("[" + "0," * 65_534 + "0]", True),
    ("[" + "0," * 65_536 + "0]", False),
    (json.dumps(["x"] * 70_000), False),
    ("[" * 100_000, False),
])
def test_body_shape_bounds(body: str, ok: bool) -> None:
    if ok:
        check_shape(body.encode())
        parse_json(body.encode())
    else:
        with pytest.raises(APIError, match="this server takes at most 65536 JSON values nested at most 64 deep"):
            parse_json(body.encode())


def test_not_json_is_a_400() -> None:
    with pytest.raises(APIError, match="not valid JSON") as e:
        parse_json(b"{nope")
    assert e.value.status == 400


def test_hosts_and_origins() -> None:
    g = Guard(None, allowed_hosts=["models.lan"], allowed_origins=["https://app.example"])  # type: ignore[arg-type]
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "10.0.0.5", "models.lan:8080", "x.localhost"):
        assert g.host_ok(host), host
    for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", ""):
        assert not g.host_ok(host), host
    assert g.origin_ok("http://127.0.0.1:8080", "127.0.0.1:8080")  # the server's own page
    assert g.origin_ok("https://app.example", "127.0.0.1:8080")
    for origin in ("https://evil.example", "null", "http://127.0.0.1:9999", "file://"):
        assert not g.origin_ok(origin, "127.0.0.1:8080"), origin
    anyone = Guard(None, allowed_hosts=["*"], allowed_origins=["*"])  # type: ignore[arg-type]
    assert anyone.host_ok("evil.example") and anyone.origin_ok("https://evil.example", "x")


@pytest.mark.parametrize(("name", "sampling", "sample", "beam", "max_new"), [
    # the originals' chat() (fact sheets): (default mode, sampling's (temperature, top_p, top_k, penalty), beam
    # search's (beams, penalty), max_new_tokens); 1.0's sampling has no repetition penalty, and none can be given
    ("2.6", True, (0.7, 0.8, 100, 1.05), (3, 1.2), 2048),
    ("2.5", True, (0.7, 0.8, 100, 1.05), (3, 1.2), 1024),
    ("2.0", True, (0.7, 0.8, 100, 1.05), (3, 1.2), 1024),
    ("1.0", False, (0.6, 0.8, 100, 1.0), (3, 1.2), 2048),
    # 4.6 has no chat(): generation_config.json's sampling (top_k off), and do_sample=False is greedy (one beam)
    ("4.6", True, (0.7, 1.0, 0, 1.0), (1, 1.0), 2048),
])
def test_chat_keywords_take_the_original_defaults_of_their_mode(name, sampling, sample, beam, max_new) -> None:
    defaults = FAMILIES[name].chat
    gp, _ = chat_params(defaults, seed=1)
    assert gp.sampling is sampling and gp.max_new_tokens == max_new
    gp, _ = chat_params(defaults, sampling=True, seed=1)
    assert (gp.temperature, gp.top_p, gp.top_k, gp.repetition_penalty) == sample
    assert chat_params(defaults, stream=True, seed=1)[0].sampling  # beam search cannot stream: a stream samples
    given, _ = chat_params(defaults, sampling=True, repetition_penalty=1.3, seed=1)
    assert given.repetition_penalty == (1.0 if name == "1.0" else 1.3)  # a key the mode lacks is dropped
    b, _ = chat_params(defaults, sampling=False, temperature=0.9, top_k=5, seed=1)  # the other mode's: ignored
    assert (b.num_beams, b.repetition_penalty, b.temperature, b.top_k) == (*beam, 0.0, 0)
    assert chat_params(defaults, stop="END", seed=1)[0].stop == ("END",)
    with pytest.raises(TypeError, match="stop must be a sequence of non-empty strings"):
        chat_params(defaults, stop=["ok", ""], seed=1)
    with pytest.raises(ValueError, match="top_p must be"):
        chat_params(defaults, sampling=True, top_p=0.0, seed=1)


HELLO = [{"role": "user", "content": "Hello"}]


@pytest.mark.parametrize(("extra", "kwargs"), [
    ({}, {}),
    ({"downsample_mode": "4x"}, {"downsample_mode": "4x"}),
    ({"enable_thinking": True}, {"enable_thinking": True}),
    ({"chat_template_kwargs": {"enable_thinking": False}}, {"enable_thinking": False}),  # vLLM's and llama-server's
    ({"enable_thinking": True, "chat_template_kwargs": {"enable_thinking": True}}, {"enable_thinking": True}),
    ({"downsample_mode": None, "enable_thinking": None, "chat_template_kwargs": {}}, {}),
    ({"temporal_ids": [[0, 3, 7], [10, 13]], "max_slice_nums": 1, "use_image_id": False},  # 4.5's packed frames
     {"temporal_ids": ((0, 3, 7), (10, 13)), "max_slice_nums": 1, "use_image_id": False}),
    ({"temporal_ids": [[-1, 2147483647]]}, {"temporal_ids": ((-1, 2147483647),)}),
])
def test_prompt_switches_reach_chat(extra: dict, kwargs: dict) -> None:
    req = parse_chat_request({"messages": HELLO, **extra}, None)
    switches = ("downsample_mode", "enable_thinking", "temporal_ids", "max_slice_nums", "use_image_id")
    assert {k: v for k, v in req.chat_kwargs.items() if k in switches} == kwargs
    chat_params(FAMILIES["4.6"].chat, **req.chat_kwargs, seed=1)  # keywords chat_params takes


@pytest.mark.parametrize(("extra", "param", "words"), [
    ({"downsample_mode": "8x"}, "downsample_mode", "'downsample_mode' must be one of '16x', '4x'"),
    ({"downsample_mode": 4}, "downsample_mode", "'downsample_mode' must be one of"),
    ({"enable_thinking": "yes"}, "enable_thinking", "'enable_thinking' must be true or false"),
    ({"chat_template_kwargs": []}, "chat_template_kwargs", "'chat_template_kwargs' must be an object"),
    ({"chat_template_kwargs": {"enable_thinking": 1}}, "chat_template_kwargs.enable_thinking", "must be true or"),
    ({"chat_template_kwargs": {"tools_style": "x"}}, "chat_template_kwargs", "may hold 'enable_thinking' only"),
    ({"enable_thinking": True, "chat_template_kwargs": {"enable_thinking": False}}, "enable_thinking", "disagree"),
    ({"temporal_ids": [0, 1, 2]}, "temporal_ids", r"temporal_ids\[0\] must be a group .*a flat list is one group"),
    ({"temporal_ids": []}, "temporal_ids", "temporal_ids is empty"),
    ({"temporal_ids": [[0], []]}, "temporal_ids", r"temporal_ids\[1\] is an empty group"),
    ({"temporal_ids": [[0, "3"]]}, "temporal_ids", r"temporal_ids\[0\]\[1\] must be an integer, not str"),
    ({"temporal_ids": [[0, 1.5]]}, "temporal_ids", r"temporal_ids\[0\]\[1\] must be an integer, not float"),
    ({"temporal_ids": [[-2]]}, "temporal_ids", r"temporal_ids\[0\]\[0\] must be between -1 and 2147483647, got -2"),
    ({"temporal_ids": [[1 << 31]]}, "temporal_ids", "must be between -1 and 2147483647, got 2147483648"),
    ({"temporal_ids": {"a": 1}}, "temporal_ids", "temporal_ids.* must be a group"),
    ({"temporal_ids": [[0] * 70_000]}, "temporal_ids", "more than 65536 time ids"),
    ({"max_slice_nums": 0}, "max_slice_nums", "'max_slice_nums' must be between 1 and 1024, got 0"),
    ({"use_image_id": 1}, "use_image_id", "'use_image_id' must be true or false"),
])
def test_bad_prompt_switches_are_400(extra: dict, param: str, words: str) -> None:
    with pytest.raises(APIError, match=words) as e:
        parse_chat_request({"messages": HELLO, **extra}, None)
    assert e.value.status == 400 and e.value.param == param
