"""A request body -> JSON, with bounds on its shape checked before it is parsed.

Python's json builds an object for every value, so a body of tiny values costs many times its size (a 27 MB body of
a million empty messages took 1.9 GB), and a deeply nested one overflows the parser's recursion (`[` x 100000). The
body's shape is measured first on its bytes, at C speed and with memory in proportion to the body (itself bounded
by --max-body-mb): escapes are removed, which leaves every `"` a string delimiter; what lies outside strings holds
the structure, whose commas and brackets bound the number of values and whose brackets give the depth.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import APIError

MAX_VALUES = 65_536  # values (array elements and object members) in one request body
MAX_DEPTH = 64  # nesting of arrays and objects
_BRACKET = re.compile(rb"[\[\]{}]")


def _too_big(what: str) -> APIError:
    return APIError(400, f"the request body has {what}; this server takes at most {MAX_VALUES} JSON values nested "
                         f"at most {MAX_DEPTH} deep", code="request_too_complex")


def check_shape(raw: bytes, max_values: int = MAX_VALUES, max_depth: int = MAX_DEPTH) -> None:
    """APIError(400) if the JSON text `raw` holds more than max_values values or nests deeper than max_depth (an
    upper bound on the values is counted: every element or member after the first of its container follows a comma,
    the first follows the bracket)."""
    plain = raw.replace(b"\\\\", b"").replace(b'\\"', b"")  # JSON escapes pair from the left, as replace() does
    quotes = plain.count(b'"')
    if quotes > 4 * max_values + 2:  # a member is two strings (each two quotes) at most
        raise _too_big(f"more than {max_values} strings")
    outside = b"".join(plain.split(b'"')[::2])
    del plain
    opened = outside.count(b"[") + outside.count(b"{")
    if opened + outside.count(b",") + 1 > max_values:
        raise _too_big(f"more than {max_values} values")
    depth = deepest = 0
    for m in _BRACKET.finditer(outside):  # at most 2 * max_values brackets
        depth += 1 if m.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    if deepest > max_depth:
        raise _too_big(f"arrays or objects nested {deepest} deep")


def parse_json(raw: bytes) -> Any:
    """The decoded body; APIError(400) for a body that is not JSON or whose shape is beyond the bounds."""
    check_shape(raw)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None
