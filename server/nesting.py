"""How deeply a JSON or msgpack document nests, found without decoding it.

The decoders (msgspec, and the standard library's json) recurse once per nesting level: a frame of a
few kilobytes nested a few thousand deep raises RecursionError, which no handler expects (issue 11).
No message of the protocol nests more than 3 levels, so frames and bodies deeper than a small limit
(``max_depth`` in server/config.py) are refused before a decoder sees them.

Sans-I/O, and cheap whatever comes in. Most frames are settled by one count in C: a document cannot
nest deeper than the number of bytes that could open a container. The others are walked, JSON token
by token (strings skipped by a regular expression that never backtracks), msgpack header by header
(strings and binaries skipped by their length), for at most ``MAX_VALUES`` values: a frame that
needs more to be judged is refused too, so that a frame of 64 KiB of ``[]`` costs a hostile client a
refusal, not the node 30 ms of Python for each frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

MAX_DEPTH = 32  # the default limit (``max_depth`` in server/config.py); no message nests more than 3
MAX_VALUES = 1024  # values walked at most (JSON: arrays, objects, strings); no message holds 50

# An array or object opening, closing, or a whole string: possessive, so that a string without an end
# costs one pass (it runs to the end of the input: the decoder will refuse it before any deeper level).
_JSON_TOKEN = re.compile(r'([\[{])|([\]}])|"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_JSON_TOKEN_BYTES = re.compile(rb'([\[{])|([\]}])|"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)

# msgpack bytes that may open a container: fixmap, fixarray, array 16/32, map 16/32.
_MSGPACK_OPENERS = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_MSGPACK_OTHERS = bytes(b for b in range(256) if b not in _MSGPACK_OPENERS)


def too_deep(max_depth: int) -> str:
    return f"nested too deep: at most {max_depth} levels of arrays and objects"


def too_many(max_depth: int) -> str:
    return f"too complex to check for depth: over {MAX_VALUES} values and over {max_depth} brackets"


def json_refusal(data: str | bytes, max_depth: int) -> str | None:
    """Why ``data`` (JSON text) is refused: nested deeper than ``max_depth``, or too many values to
    tell (see the module's docstring); None when it is not.

    Invalid JSON may be judged either way: the decoder refuses it anyway, and never recurses past the
    point where this walk stopped counting (an unterminated string ends both)."""
    if isinstance(data, str):
        if data.count("[") + data.count("{") <= max_depth:
            return None
        return _walk_json(_JSON_TOKEN.finditer(data), max_depth)
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return None
    return _walk_json(_JSON_TOKEN_BYTES.finditer(data), max_depth)


def _walk_json(tokens: Iterator[re.Match[Any]], max_depth: int) -> str | None:
    depth = 0
    for walked, token in enumerate(tokens):
        if walked >= MAX_VALUES:
            return too_many(max_depth)
        kind = token.lastindex  # 1: an opening, 2: a closing, None: a string
        if kind == 1:
            depth += 1
            if depth > max_depth:
                return too_deep(max_depth)
        elif kind == 2:
            depth -= 1
    return None


# What follows each header byte: ``_SKIP[b]`` bytes of payload (-1: a length field says how many),
# and ``_ITEMS[b]`` items for a container (-1: not one; a fixmap's entries count twice).
_SKIP = [0] * 256
_ITEMS = [-1] * 256
for _b in range(0x80, 0x90):
    _ITEMS[_b] = 2 * (_b & 0x0F)
for _b in range(0x90, 0xA0):
    _ITEMS[_b] = _b & 0x0F
for _b in range(0xA0, 0xC0):
    _SKIP[_b] = _b & 0x1F
for _b, _n in {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4}.items():
    _SKIP[_b] = _n
for _b, _n in {0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}.items():  # fixext: type + data
    _SKIP[_b] = _n
# Headers followed by a length of ``width`` bytes, then that many bytes (+1 for ext's type byte).
_SIZED: dict[int, tuple[int, int]] = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin 8/16/32
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext 8/16/32
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str 8/16/32
}  # fmt: skip
# Containers with a length of ``width`` bytes: (width, items per entry).
_WIDE: dict[int, tuple[int, int]] = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}
for _b in (*_SIZED, *_WIDE):
    _SKIP[_b] = -1


def msgpack_refusal(data: bytes, max_depth: int) -> str | None:
    """As ``json_refusal``, for msgpack. Truncated input ends the walk (the decoder refuses it);
    bytes after the first object are not walked (the decoder refuses those too)."""
    if len(data.translate(None, _MSGPACK_OTHERS)) <= max_depth:
        return None
    pending = [1]  # items still to read in each open container; the bottom one: the document
    size, i, walked = len(data), 0, 0
    while i < size:
        walked += 1
        if walked > MAX_VALUES:
            return too_many(max_depth)
        byte = data[i]
        i += 1
        skip, items = _SKIP[byte], _ITEMS[byte]
        if skip >= 0:
            i += skip
        elif byte in _SIZED:
            width, extra = _SIZED[byte]
            i += width + extra + int.from_bytes(data[i : i + width], "big")
        else:
            width, per_entry = _WIDE[byte]
            items = per_entry * int.from_bytes(data[i : i + width], "big")
            i += width
        pending[-1] -= 1
        if items >= 0:  # a container; an empty one is a level too
            if len(pending) > max_depth:  # the open containers, and this one
                return too_deep(max_depth)
            if items:
                pending.append(items)
        while pending[-1] == 0:
            pending.pop()
            if not pending:
                return None
    return None
