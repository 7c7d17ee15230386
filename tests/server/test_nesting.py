"""server/nesting.py: the depth found without decoding is the depth of the document (Hypothesis against
real encoders), strings and binaries never count, and a hostile input costs little: a linear pass, and
at most MAX_VALUES values walked in Python."""

from __future__ import annotations

import json
import time
from typing import Any

import msgpack
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server import wire
from server.nesting import MAX_VALUES, json_refusal, msgpack_refusal


def json_too_deep(data: str | bytes, limit: int) -> bool:
    refusal = json_refusal(data, limit)
    assert refusal is None or "deep" in refusal, refusal
    return refusal is not None


def msgpack_too_deep(data: bytes, limit: int) -> bool:
    refusal = msgpack_refusal(data, limit)
    assert refusal is None or "deep" in refusal, refusal
    return refusal is not None


# Text full of what a naive scanner would take for structure.
tricky_text = st.text(alphabet='[]{}"\\,: \x00\u00e9\u0391\ud7ff\U0001f600', max_size=12)
integers = st.integers(-(2**63), 2**64 - 1)
scalars = st.none() | st.booleans() | integers | st.floats(allow_nan=False) | tricky_text
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=40,
)
binaries = st.binary(max_size=40).map(lambda b: b + bytes([0x91, 0xDC, 0x81]))
packable = st.recursive(
    scalars | binaries,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(documents, st.integers(0, 8))
def test_json_depth_is_the_documents_depth(doc: Any, limit: int) -> None:
    text = json.dumps(doc, ensure_ascii=False)
    assert json_too_deep(text, limit) == (depth(doc) > limit)
    assert json_too_deep(text.encode("utf-8", "surrogatepass"), limit) == (depth(doc) > limit)


@settings(max_examples=400, deadline=None)
@given(packable, st.integers(0, 8))
def test_msgpack_depth_is_the_documents_depth(doc: Any, limit: int) -> None:
    data = msgpack.packb(doc, use_bin_type=True, unicode_errors="surrogatepass")
    assert msgpack_too_deep(data, limit) == (depth(doc) > limit)


def test_msgpack_wide_headers_and_extensions_are_walked() -> None:
    """array 16/32, map 16/32, str 8/16/32, bin 8/16/32, ext and fixext: skipped by their lengths."""
    inner = [msgpack.ExtType(1, b"\x91" * n) for n in (1, 2, 4, 8, 16, 3, 300, 70000)]
    doc = {"a": [[["x" * 40, "y" * 300, "z" * 70000, b"\x91" * 300, b"\x91" * 70000, *inner]]]}
    doc["wide"] = list(range(20)) + [{str(i): i for i in range(20)}]
    data = msgpack.packb(doc, use_bin_type=True)
    assert not msgpack_too_deep(data, 4) and msgpack_too_deep(data, 3)
    array32 = b"\xdd\x00\x00\x00\x01" * 40 + b"\xc0"
    map32 = (b"\xdf\x00\x00\x00\x01\xa1k") * 40 + b"\xc0"
    for deep in (array32, map32):
        assert msgpack_too_deep(deep, 39) and not msgpack_too_deep(deep, 40)


@pytest.mark.parametrize(
    "text",
    [
        '"' + "[" * 100,  # an unterminated string: the decoder stops there
        '["' + '\\"' * 100 + "[" * 100,  # escaped quotes do not end a string
        '"\\',  # a lone backslash at the end
    ],
)
def test_json_brackets_inside_strings_never_count(text: str) -> None:
    assert not json_too_deep(text, 2)
    assert json_too_deep("[" * 3 + text, 2)


def test_a_hostile_frame_costs_little() -> None:
    """Inputs that would make a backtracking scanner quadratic, or a walk in Python slow, at 4 times
    the largest frame a node decodes: each is judged in a few milliseconds (64 KiB of ``[]``, walked
    to the end, took 13 ms in JSON and 33 ms in msgpack)."""
    size = 4 * 65536
    cases: list[str] = [
        "[" * 32 + "]" * 32 + '"' + '\\"' * (size // 2),  # one string that never ends
        "[" * 32 + "]" * 32 + '"\\' * (size // 2),
        "[" * size,
        "[" + "[]," * (size // 3) + "[]]",
        "[" + '"",' * (size // 3) + "[]" * 40 + "]",
        "[" + "[[]," * (size // 4) + "]" * (size // 4),
    ]
    for case in cases:
        for data in (case, case.encode()):
            started = time.perf_counter()
            refusal = json_refusal(data, 32)
            assert time.perf_counter() - started < 0.02, case[:40]
            assert refusal is None or "deep" in refusal or str(MAX_VALUES) in refusal
    wide = [b"\x91" * size, b"\xdc\xff\xff" + b"\x90" * 65535, b"\xdc\xff\xff" + b"\x91\xa1x" * 65535]
    for data in wide:
        started = time.perf_counter()
        msgpack_refusal(data, 32)
        assert time.perf_counter() - started < 0.02, data[:10]


def test_a_wide_document_with_brackets_to_spare_is_refused_as_too_complex() -> None:
    """Over ``max_depth`` brackets and over MAX_VALUES values: refused without being walked to the end."""
    flat = "[" + "[]," * MAX_VALUES + "[]]"
    assert str(MAX_VALUES) in (json_refusal(flat, 32) or "")
    packed = msgpack.packb([[]] * MAX_VALUES)
    assert str(MAX_VALUES) in (msgpack_refusal(packed, 32) or "")
    # Many values but few brackets, or many brackets in few values: judged, and not refused.
    assert json_refusal(json.dumps({"x": list(range(5000)), "t": "[" * 5000}), 32) is None
    assert msgpack_refusal(msgpack.packb({"x": list(range(100)) * 50}), 32) is None
    assert msgpack_refusal(msgpack.packb({"x": list(range(100)), "b": b"\x91" * 5000}), 32) is None
    # Bytes that could open containers (UTF-8 of Cyrillic text, numbers) make msgpack walked.
    assert msgpack_refusal(msgpack.packb({"x": list(range(500)), "t": "привет" * 1000}), 32) is None


@pytest.mark.parametrize("depth_", [33, 2_000, 100_000])
def test_wire_refuses_deep_frames_with_bad_frame_before_decoding(depth_: int) -> None:
    json_frame = '{"type": "ping", "x": ' + "[" * depth_ + "]" * depth_ + "}"
    msgpack_frame = b"\x82\xa4type\xa4ping\xa1x" + b"\x91" * depth_ + b"\xc0"
    for frame in (json_frame, msgpack_frame):
        with pytest.raises(wire.WireError) as refused:
            wire.decode(frame, max_depth=32)
        assert refused.value.code == "bad_frame" and "deep" in refused.value.message


def test_wire_accepts_its_own_messages_at_the_default_depth() -> None:
    poll = {"type": "poll.create", "id": 1, "question": "Q?", "options": ["a", "b"], "correct": [0]}
    candidate = {"type": "ice.candidate", "pc": "publisher", "candidate": {"candidate": "c", "sdpMid": "0"}}
    for message in (poll, candidate):
        assert isinstance(wire.decode(json.dumps(message)), wire.Message)
        assert isinstance(wire.decode(msgspec.msgpack.encode(message)), wire.Message)


def test_a_recursion_error_anywhere_in_decoding_is_a_bad_frame() -> None:
    """The last resort, should a frame within the limit still exhaust the stack (a deep call site)."""
    frame = '{"type": "ping", "x": ' + "[" * 3000 + "]" * 3000 + "}"
    with pytest.raises(wire.WireError) as refused:
        wire.decode(frame, max_depth=10_000)  # a limit too high to protect: the decoder recurses
    assert refused.value.code == "bad_frame"
