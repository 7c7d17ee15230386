"""Text that may enter a stage: valid Unicode, that is, encodable as UTF-8.

A Python ``str`` may hold a lone UTF-16 surrogate (U+D800-U+DFFF): the standard ``json`` module and
PyJWT decode the JSON escape ``"\\ud800"`` to one, and command-line arguments that are not UTF-8 arrive
as surrogates too. No UTF-8 encoder accepts it, so one such name, once on a stage, made every encoder
after it fail (the wire, the stage's event log, its durable state): the stage froze. The shell refuses
such text where it enters (``find_bad_text`` on every decoded frame, body and token); the domain
refuses it again in every text it takes (``require_text``), so nothing it holds can fail an encoder.
"""

from __future__ import annotations

import re
from typing import Any

from rooms.errors import BadText

_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_KEY_SHOWN = 40


def is_valid(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (a search, not an encoding: no copy of a long text)."""
    return text.isascii() or _SURROGATE.search(text) is None


def find_bad_text(value: object, where: str = "") -> str | None:
    """Where the first string in ``value`` that is not valid Unicode is (``name``, ``options[1]``, a
    key), or None. ``value`` is a string, or dicts, lists and tuples of anything, at any depth: the
    walk keeps its own stack, so depth does not matter. The path never quotes the bad text itself (a
    message that holds it could not be sent either)."""
    if _all_valid(value):  # the common case, without building paths (every frame passes here)
        return None
    stack: list[tuple[object, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not is_valid(item):
                return path or "text"
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and not is_valid(key):
                    return f"{path} (a key)" if path else "a key"
                shown = key if isinstance(key, str) and len(key) <= _MAX_KEY_SHOWN else "…"
                stack.append((child, f"{path}.{shown}" if path else str(shown)))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def _all_valid(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item) is not None:
                return False
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key) is not None:
                    return False
                stack.append(child)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return True


def scrub(value: Any) -> Any:
    """``value`` (builtins: strings, dicts, lists) with U+FFFD for every lone surrogate: for an encoder
    that must not fail (the wire), never for what enters a stage (that is refused)."""
    if isinstance(value, str):
        return value if is_valid(value) else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def bad_text_message(where: str) -> str:
    return (
        f"{where}: not valid Unicode text (it holds a lone UTF-16 surrogate, U+D800 to U+DFFF, "
        "which cannot be encoded as UTF-8)"
    )


def require_text(value: object, what: str) -> None:
    """Raise ``BadText`` (code ``bad_text``) if ``value`` holds text that is not valid Unicode."""
    where = find_bad_text(value, what)
    if where is not None:
        raise BadText(bad_text_message(where))
