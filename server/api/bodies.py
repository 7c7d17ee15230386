"""Request bodies of the HTTP API: one reader for every route, so every body gets the same checks.

A body is JSON (empty: ``{}``) read by ``wire.loads``, the one reader of what clients send: nested at
most ``max_depth`` levels (server/config.py; checked before decoding, see server/nesting.py: the
decoders recurse, and a body nested 10,000 deep used to be a RecursionError and a 500), every string
valid Unicode (``bad_text``), then converted by msgspec into the type the route asks for. Anything
else is a ``BadBody``, which routes answer with a 400 problem document carrying its code.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from server import wire
from server.nesting import MAX_DEPTH


class BadBody(Exception):
    """A body that cannot become the route's request; the message says why, for people."""

    def __init__(self, message: str, code: str = "invalid_body") -> None:
        super().__init__(message)
        self.code = code


async def read_json(request: web.Request, kind: Any = dict[str, Any]) -> Any:
    """The body decoded as ``kind`` (a msgspec-convertible type), or ``BadBody``."""
    raw = await request.read() if request.can_read_body else b""
    config = request.app.get("config")  # absent in an app of a test that mounts routes alone
    max_depth: int = config.max_depth if config is not None else MAX_DEPTH
    try:
        value = wire.loads(raw or b"{}", max_depth=max_depth)
    except wire.WireError as exc:
        if exc.code == "bad_text":
            raise BadBody(exc.message, exc.code) from None
        raise BadBody(f"the body must be a JSON object: {exc.message}") from None
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise BadBody(str(exc)) from None
    except RecursionError:  # the last resort: a limit set too high for the stack left here
        raise BadBody("the body is nested too deep for this node") from None
