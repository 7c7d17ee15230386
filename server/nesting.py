"""How deeply a JSON or msgpack document nests, found without decoding it.

The decoders (msgspec, and the standard library's json) recurse once per nesting level: a frame of a
few kilobytes nested a few thousand deep raises RecursionError, which no handler expects (issue 11).
No message of the protocol nests more than a few levels, so frames and bodies deeper than a small
limit (``max_depth`` in server/config.py) are refused before a decoder sees them.

Sans-I/O and linear in the input: JSON is scanned for brackets outside strings (a regular expression
skips strings without backtracking), msgpack is walked header by header (strings and binaries are
skipped by their length). Both start with a count that settles ordinary frames in one pass in C: a
document cannot nest deeper than the number of bytes that could open a container.
"""

from __future__ import annotations

import re

MAX_DEPTH = 32  # the default limit (``max_depth`` in server/config.py); no message nests more than 3

# A string's rest after its opening quote, possessive so that a string without an end costs one pass
# (it runs to the end of the input: the decoder will refuse it before any deeper level).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_JSON_STRING_BYTES = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_JSON_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_JSON_NOT_BRACKET_BYTES = re.compile(rb"[^\[\]{}]+")

# msgpack bytes that may open a container: fixmap, fixarray, array 16/32, map 16/32.
_MSGPACK_OPENERS = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_MSGPACK_OTHERS = bytes(b for b in range(256) if b not in _MSGPACK_OPENERS)


def json_too_deep(data: str | bytes, limit: int) -> bool:
    """Whether ``data`` (JSON text) has more than ``limit`` arrays and objects nested in each other.

    Invalid JSON may be judged either way: the decoder refuses it anyway, and never recurses past the
    point where this scan stopped counting (an unterminated string ends both)."""
    if isinstance(data, str):
        if data.count("[") + data.count("{") <= limit:
            return False
        brackets = _JSON_NOT_BRACKET.sub("", _JSON_STRING.sub("", data))
        opens: tuple[str | int, ...] = ("[", "{")
        items: str | bytes = brackets
    else:
        if data.count(b"[") + data.count(b"{") <= limit:
            return False
        brackets_b = _JSON_NOT_BRACKET_BYTES.sub(b"", _JSON_STRING_BYTES.sub(b"", data))
        opens = (ord("["), ord("{"))
        items = brackets_b
    depth = 0
    for char in items:
        if char in opens:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


# Bytes that follow a header byte, for the headers whose length is fixed by the byte itself.
_MSGPACK_FIXED: dict[int, int] = {
    0xC0: 0, 0xC1: 0, 0xC2: 0, 0xC3: 0,  # nil, (never used), false, true
    0xCA: 4, 0xCB: 8,  # float 32/64
    0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,  # uint 8-64
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,  # int 8-64
    0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,  # fixext 1-16: a type byte and the data
}  # fmt: skip
# Headers followed by a length of n bytes, then that many bytes (+1 for ext's type byte).
_MSGPACK_SIZED: dict[int, tuple[int, int]] = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin 8/16/32
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext 8/16/32
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str 8/16/32
}  # fmt: skip
# Containers with a length of n bytes: (n, items per entry).
_MSGPACK_CONTAINERS: dict[int, tuple[int, int]] = {
    0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2),
}  # fmt: skip


def msgpack_too_deep(data: bytes, limit: int) -> bool:
    """Whether ``data`` (msgpack) has more than ``limit`` arrays and maps nested in each other.

    Truncated input ends the walk (the decoder refuses it); bytes after the first object are ignored
    (the decoder refuses those too)."""
    if len(data.translate(None, _MSGPACK_OTHERS)) <= limit:
        return False
    pending = [1]  # items still to read in each open container; the bottom one: the document
    size, i = len(data), 0
    while i < size:
        byte = data[i]
        i += 1
        count = -1  # items in it, if this is a container (empty ones count as a level too)
        if byte <= 0x7F or byte >= 0xE0:  # fixint
            pass
        elif byte <= 0x8F:
            count = 2 * (byte & 0x0F)
        elif byte <= 0x9F:
            count = byte & 0x0F
        elif byte <= 0xBF:
            i += byte & 0x1F
        elif byte in _MSGPACK_FIXED:
            i += _MSGPACK_FIXED[byte]
        elif byte in _MSGPACK_SIZED:
            width, extra = _MSGPACK_SIZED[byte]
            i += width + extra + int.from_bytes(data[i : i + width], "big")
        else:
            width, per_entry = _MSGPACK_CONTAINERS[byte]
            count = per_entry * int.from_bytes(data[i : i + width], "big")
            i += width
        pending[-1] -= 1
        if count >= 0:
            if len(pending) > limit:  # the open containers, and this one
                return True
            if count:
                pending.append(count)
        while pending[-1] == 0:
            pending.pop()
            if not pending:
                return False
    return False
