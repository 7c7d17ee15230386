"""Direct writes (``Connection.send``'s fast path): a frame goes straight to the socket's transport
when nothing is ahead of it, else through the outbox and the writer task, whose policy is unchanged
(tests/server/test_outbox.py). On a node served in this process, so that each connection's counters
and transport can be read while a real client (tests/support/slow_socket.py) stops and resumes
reading: order is kept across the switch, a transport with bytes buffered sends through the queue,
and a close after flush is still the last thing a client gets.

The frames themselves are checked byte for byte against aiohttp's own writer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.http_websocket import WSMsgType

from server.signalling.connection import Connection
from server.wire import Outgoing, ws_frame
from tests.support.inprocess import InProcessNode, serve
from tests.support.slow_socket import Closed, SlowSocket
from tests.support.tokens import signed
from tests.support.waiting import eventually
from tests.support.ws import Socket

BIG = "€" * 9000  # a 27 kB comment frame: a socket that does not read is full after a few


# --- the frame ----------------------------------------------------------------------------------


class _Recorder:
    """Where aiohttp's writer writes: the bytes, in order (this checks framing, not I/O)."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += bytes(data)

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("binary", [False, True])
async def test_a_frame_is_the_bytes_aiohttps_server_writer_sends(size: int, binary: bool) -> None:
    recorder = _Recorder()
    writer = WebSocketWriter(None, recorder, use_mask=False, compress=0)  # type: ignore[arg-type]
    payload = bytes(i % 251 for i in range(size))
    await writer.send_frame(payload, WSMsgType.BINARY if binary else WSMsgType.TEXT)
    assert ws_frame(payload, binary) == recorder.data


def test_a_broadcast_is_framed_once_per_framing() -> None:
    outgoing = Outgoing({"type": "comment.posted", "text": "é"})
    assert outgoing.frame(False) is outgoing.frame(False)
    assert outgoing.frame(True) is outgoing.frame(True)
    assert outgoing.frame(False) == ws_frame(outgoing.encoded(False).encode(), False)  # type: ignore[union-attr]
    assert outgoing.frame(True) == ws_frame(outgoing.encoded(True), True)  # type: ignore[arg-type]


# --- on a node ----------------------------------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[InProcessNode]:
    async with serve(tmp_path, comment_max_chars=len(BIG), comment_rate=100_000) as running:
        yield running


async def _host(session: aiohttp.ClientSession, served: InProcessNode, stage: str) -> Socket:
    host = Socket(await session.ws_connect(served.ws_url(), max_msg_size=0))
    join = {"type": "join", "id": "j", "stage": stage, "role": "host", "media": False}
    joined = await host.request(signed(join))
    assert joined["type"] == "joined", joined
    return host


async def _post(host: Socket, text: str) -> str:
    reply = await host.request({"type": "comment.post", "id": uuid.uuid4().hex[:8], "text": text})
    assert reply["type"] == "ok", reply
    return str(reply["comment_id"])


async def _slow_audience(served: InProcessNode, stage: str) -> tuple[SlowSocket, Connection]:
    slow = await asyncio.to_thread(SlowSocket, served.port)
    slow.send(signed({"type": "join", "id": "j", "stage": stage, "role": "audience", "media": False}))
    frames = await asyncio.to_thread(slow.recv_until, "j")
    assert frames[-1]["type"] == "joined", frames
    conn = served.node.stages[stage].connections[frames[-1]["participant"]["id"]]
    assert isinstance(conn, Connection)
    return slow, conn


async def test_a_client_that_keeps_up_gets_every_broadcast_by_direct_writes_in_order(
    served: InProcessNode,
) -> None:
    stage = "dw-" + uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as session:
        host = await _host(session, served, stage)
        viewer = Socket(await session.ws_connect(served.ws_url()))
        joined = await viewer.request(signed({"type": "join", "id": "j", "stage": stage, "media": False}))
        assert joined["type"] == "joined", joined
        conn = served.node.stages[stage].connections[joined["participant"]["id"]]
        assert isinstance(conn, Connection)
        before = conn.direct_frames, conn.queued_frames
        posted = [await _post(host, f"comment {i}") for i in range(50)]
        frames = await viewer.sync()
        assert [f["comment"]["id"] for f in frames if f["type"] == "comment.posted"] == posted
        assert conn.direct_frames - before[0] >= 50, "every comment written directly"
        assert conn.queued_frames - before[1] == 0, "none queued"


async def test_a_client_that_falls_behind_is_served_through_the_queue_and_order_is_kept(
    served: InProcessNode,
) -> None:
    stage = "dw-" + uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as session:
        host = await _host(session, served, stage)
        slow, conn = await _slow_audience(served, stage)
        try:
            transport = conn._transport
            assert transport is not None
            # 1. It stops reading: direct writes until its transport has bytes buffered, then the queue.
            posted: list[str] = []
            while conn.queued_frames == 0:
                posted.append(await _post(host, BIG))
                assert len(posted) < 500, "the slow client's transport never filled"
            direct = conn.direct_frames
            assert direct > 0, "the first comments went directly"
            assert transport.get_write_buffer_size() > 0, "queued only once the transport held bytes"
            for _ in range(3):  # more, all through the queue now, none dropped (below the limit)
                posted.append(await _post(host, BIG))
            assert conn.direct_frames == direct and conn.queued_frames >= 4
            # 2. It reads everything: every comment once, in posting order across the switch.
            slow.send({"type": "ping", "id": "caught-up"})
            frames = await asyncio.to_thread(slow.recv_until, "caught-up")
            assert [f["comment"]["id"] for f in frames if f["type"] == "comment.posted"] == posted
            # 3. Caught up: direct writes again.
            await eventually(
                lambda: not conn.outbox and not conn._writing and not transport.get_write_buffer_size(), 5.0
            )
            after = await _post(host, "small again")
            assert conn.direct_frames == direct + 1
            slow.send({"type": "ping", "id": "last"})
            frames = await asyncio.to_thread(slow.recv_until, "last")
            assert [f["comment"]["id"] for f in frames if f["type"] == "comment.posted"] == [after]
        finally:
            slow.close()


@pytest.mark.parametrize("behind", [False, True], ids=["keeping-up", "behind"])
async def test_a_close_after_flush_is_still_the_last_frame(served: InProcessNode, behind: bool) -> None:
    stage = "dw-" + uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as session:
        host = await _host(session, served, stage)
        slow, conn = await _slow_audience(served, stage)
        try:
            posted = []
            if behind:
                while not conn.outbox:
                    posted.append(await _post(host, BIG))
            else:
                posted.append(await _post(host, "one"))
            # In one pass of the loop, as a removal does it (sinks: the notice, then the close): the
            # frame before the close is the last one sent; one after it is never sent.
            conn.send(Outgoing({"type": "comment.posted", "comment": {"id": "before-close"}}))
            conn.close_after_flush(4003, "removed")
            conn.send(Outgoing({"type": "comment.posted", "comment": {"id": "after-close"}}))

            def read_to_the_end() -> tuple[list[dict[str, Any]], Closed]:
                got = []
                while True:
                    try:
                        got.append(slow.recv())
                    except Closed as closed:
                        return got, closed

            got, closed = await asyncio.to_thread(read_to_the_end)
            assert closed.code == 4003, closed
            assert [f["comment"]["id"] for f in got if f["type"] == "comment.posted"] == [
                *posted,
                "before-close",
            ]
        finally:
            slow.close()
