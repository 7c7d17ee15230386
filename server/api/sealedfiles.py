"""Downloading a sealed track file (recording/sealed.py): decrypted on the fly with its publisher's
key, never whole in memory, never written out in the clear; a single byte range (``Range``) is
honoured. A key that was destroyed (the person was erased) answers 410 ``erased``: the file's bytes
are still there, but nobody can read them any more."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import BinaryIO

from aiohttp import web

from recording.sealed import CHUNK_BYTES, SealedError, SealedKeyMissing, key_id_of, open_plaintext, plain_name
from server.api.common import problem
from server.host.node import Node

CONTENT_TYPES = {".webm": "video/webm", ".mkv": "video/x-matroska"}


async def serve_sealed(request: web.Request, node: Node, path: Path) -> web.StreamResponse:
    """The plaintext of the sealed file at ``path``, or the problem that stops it."""
    key_id = key_id_of(path)
    assert key_id is not None
    ring = await node.keys_by_id({key_id})
    try:
        stream = await asyncio.to_thread(open_plaintext, path, ring)
    except SealedKeyMissing:
        return problem(410, "erased", "this track was sealed with a key that no longer exists: it is erased")
    except SealedError as exc:
        return problem(500, "damaged", f"this track file cannot be read: {exc}")
    try:
        return await _send(request, stream, path)
    finally:
        stream.close()


async def _send(request: web.Request, stream: BinaryIO, path: Path) -> web.StreamResponse:
    size = await asyncio.to_thread(stream.seek, 0, 2)
    start, end = 0, size
    status = 200
    try:
        wanted = request.http_range
    except ValueError:
        wanted = slice(None, None)
    if wanted.start is not None or wanted.stop is not None:
        first, stop = wanted.start, wanted.stop
        if first is not None and first < 0:  # bytes=-N: the last N bytes
            first, stop = max(0, size + first), size
        first = first or 0
        stop = size if stop is None else min(stop, size)
        if first >= size or first >= stop:
            refused = problem(416, "range_not_satisfiable", f"the file holds {size} bytes")
            refused.headers["Content-Range"] = f"bytes */{size}"
            return refused
        start, end, status = first, stop, 206
    response = web.StreamResponse(status=status)
    response.content_type = CONTENT_TYPES.get(Path(plain_name(path)).suffix, "application/octet-stream")
    response.content_length = end - start
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Content-Disposition"] = f'attachment; filename="{plain_name(path)}"'
    response.headers["Cache-Control"] = "no-store"  # an erasure must not leave copies in caches
    if status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    await response.prepare(request)
    await asyncio.to_thread(stream.seek, start)
    left = end - start
    while left > 0:
        try:
            block = await asyncio.to_thread(stream.read, min(CHUNK_BYTES, left))
        except SealedError:  # a chunk altered on disk: the download ends short (it was announced whole)
            break
        if not block:
            break
        await response.write(block)
        left -= len(block)
    if left > 0 and request.transport is not None:
        request.transport.close()  # cut short: the client sees an incomplete body, never a padded one
        return response
    await response.write_eof()
    return response
