"""The participant WebSocket: frames in, typed requests to the stage and its media, replies and events out.

A thin shell. Decoding and validation live in ``wire``; permissions in ``rooms``; media in ``media``.
Every refused request gets one error frame, to its sender only, and changes nothing.

The moderator console's socket (``GET /console``, docs/console.md) is this same connection joined as
an *observer*: its token must carry the ``moderate`` grant for a host or moderator, it gets no media,
and it is not on the stage (``rooms.stage.Stage.observers``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from media.errors import MediaError, NoOffer
from media.room import IcePeer
from media.tasks import OwnedTasks
from rooms.errors import DomainError
from rooms.events import Event
from rooms.rates import RateClass
from rooms.roles import Role
from server import metrics, wire, wire_out
from server.auth import AuthError, Claims
from server.backend import Owner
from server.closecodes import CloseCode
from server.host.live import LiveStage
from server.host.node import Node
from server.routing.errors import StageUnavailable
from server.signalling import admission, commands
from server.signalling.candidates import Candidates
from server.signalling.outbox import Close, Outbox, Overflow
from server.wire import Outgoing

log = logging.getLogger(__name__)

# Close codes (docs/protocol.md).


class Connection:
    """One participant's signalling socket and everything it owns."""

    def __init__(
        self, ws: web.WebSocketResponse | None, node: Node, transport: asyncio.Transport | None = None
    ) -> None:
        self.ws: Any = ws  # None for a RemoteConnection (server/relay.py), which overrides the I/O
        # The socket's transport, for direct writes (``send``); None: every frame goes through the
        # outbox and the writer task (a compressed socket: its frames differ per recipient).
        self._transport = transport
        # The writer holds frames taken from the outbox and not all written yet. Needed besides the
        # outbox and the transport's buffer: after a pause the transport empties (resume_writing)
        # a loop pass before the writer resumes, and a direct write then would jump ahead.
        self._writing = False
        self.direct_frames = 0  # frames written at once by ``send`` / through the outbox and writer
        self.queued_frames = 0
        self.node = node
        self.binary = False  # reply in the framing the client last used
        self.outbox = Outbox(node.config.outbox_limit)
        self.live: LiveStage | None = None
        self.participant_id: str | None = None
        self._busy: set[str] = set()  # "publisher" / "subscriber": an SDP exchange in progress
        self._candidates = Candidates(self._peer_connection, self._refuse_candidate, self._log_context)
        self._tasks = OwnedTasks(log, "connection")
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        self._stop_reading = False
        self._closer: asyncio.Task[None] | None = None  # a close() in progress, run() lets it finish
        self._idle = False  # the reader waits in receive(), not in the middle of a request
        self.moderator_view = False  # whether the last state this client got was a moderator's
        self.remote = False  # a RemoteConnection: its socket is on another node
        self.front: str | None = None  # ...and that node (set by RemoteConnection)
        self.upstream: str | None = None  # the node hosting this client's stage, when it is not this one
        self.relay_id: str | None = None
        self.query_token: str | None = None  # ?access_token= on the socket's URL
        self.claims: Claims | None = None
        self.observer = False  # a console (GET /console): joins as an observer whatever its frame says
        self.chat_only = False  # joined without a subscriber connection (a console, or `media: false`)
        self._frame: str | bytes = ""

    # --- output ------------------------------------------------------------------------------

    def send(self, message: msgspec.Struct | Outgoing) -> None:
        """Send a frame: written at once when nothing is ahead of it, else queued (see
        server/signalling/outbox.py for what happens to a client that reads too slowly).

        The direct write is the fast path of a broadcast (a comment to 1,000 sockets): no task
        switch, no Event, the frame's bytes made once for every recipient (``Outgoing.frame``). It
        is taken only when the outbox is empty, the writer holds nothing, and the transport has
        nothing buffered (so it is not paused either): the frame is then next in line anyway, and
        order is kept. A client that reads slowly soon has bytes buffered, and from then on its
        frames go through the outbox, with its policy, until it has caught up.
        """
        if self._closing:
            return
        item = message if isinstance(message, Outgoing) else Outgoing(message)
        transport = self._transport
        if (
            transport is not None
            and not self._writing
            and not self.outbox
            and not transport.get_write_buffer_size()
            and not transport.is_closing()
            and not self.ws.closed
        ):
            transport.write(item.frame(self.binary))
            self.direct_frames += 1
            _count_direct()
            return
        self.queued_frames += 1
        try:
            if not self.outbox.put(item):
                metrics.outbox_dropped.inc()
        except Overflow:
            log.warning("outbox overflow, closing", extra=self._log_context())
            self._closing = True
            self.outbox.close()
            self._closer = self._tasks.spawn(self.close(CloseCode.TRY_LATER, "too slow: outbox overflow"))

    def close_after_flush(self, code: int, reason: str) -> None:
        """Close once every frame queued so far is sent (e.g. a removal notice, then 4003)."""
        if not self._closing:
            self.outbox.put(Close(code, reason))

    def reply(self, request: wire.Message, message: wire_out.ServerFrame) -> None:
        if request.id is not None:
            message = msgspec.structs.replace(message, id=request.id)
        self.send(message)

    def error(
        self, code: str, message: str, request_id: Any = None, retry_after: float | None = None
    ) -> None:
        metrics.signalling_errors.labels(code=code).inc()
        frame = wire_out.Error(
            id=msgspec.UNSET if request_id is None else request_id,
            code=code,
            message=message,
            retry_after=msgspec.UNSET if retry_after is None else round(retry_after, 3),
        )
        self.send(frame)

    async def _writer(self) -> None:
        sent = metrics.signalling_messages.labels(direction="out")
        while (items := await self.outbox.drain()) is not None:
            self._writing = True  # until the last of these is written: no direct write jumps ahead
            for item in items:
                if isinstance(item, Close):
                    self.outbox.close()
                    await self.close(item.code, item.reason)
                    return
                frame = item.encoded(self.binary)
                try:
                    if isinstance(frame, bytes):
                        await self.ws.send_bytes(frame)
                    else:
                        await self.ws.send_str(frame)
                except (ConnectionError, RuntimeError) as exc:
                    # The client is gone mid-send: stop the whole connection (it leaves the stage)
                    # rather than keep a reader whose replies go nowhere.
                    log.info("send failed, closing", extra=self._log_context(error=str(exc)))
                    self._abandon()
                    return
            self._writing = False
            sent.inc(len(items))

    def _abandon(self) -> None:
        """The socket cannot be written to any more: stop reading; ``run`` then leaves and cleans up."""
        self._closing = True
        self.outbox.close()
        reader = self._reader
        if reader is not None and not reader.done() and asyncio.current_task() is not reader:
            self._stop_reading = True
            reader.cancel()

    def _writer_done(self, writer: asyncio.Task[None]) -> None:
        if writer.cancelled() or writer.exception() is None:
            return
        log.error("connection writer failed", exc_info=writer.exception(), extra=self._log_context())
        self._abandon()

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``, cleanly: the reader stops first.

        aiohttp's ``close()`` from another task while the reader waits in ``receive()`` wakes the
        reader with CLOSING and then drops the TCP connection without awaiting the client's close
        frame, so the client sees 1006 instead of ``code``. Stopping the reader first lets
        ``close()`` do the full handshake.
        """
        self._closing = True
        reader = self._reader
        if reader is not None and not reader.done() and asyncio.current_task() is not reader:
            self._stop_reading = True
            if self._idle:
                reader.cancel()
            await asyncio.wait([reader])
        if not self.ws.closed:
            await self.ws.close(code=code, message=reason.encode())

    # --- input -------------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        writer.add_done_callback(self._writer_done)
        self._reader = asyncio.create_task(self._read())
        try:
            # wait(), not await: the reader may be cancelled by close(), which is not our cancellation.
            await asyncio.wait([self._reader])
        finally:
            await self._leave()
            # A close() in progress (outbox overflow) sends its code once the reader has stopped:
            # cancelling it with the other tasks would leave the socket to aiohttp's 1000. It used
            # to win that race only because leaving awaited a local peer connection's close.
            if self._closer is not None:
                await asyncio.wait([self._closer], timeout=1.0)
            await self._tasks.cancel_all()
            # Flush what is queued (e.g. "left") before the socket goes.
            self.outbox.close()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow our own cancellation
            # (CPython gh-86296) and a node shutting down would hang here.
            try:
                async with asyncio.timeout(1.0):
                    await asyncio.shield(writer)
            except TimeoutError:
                writer.cancel()

    async def _read(self) -> None:
        while not self._stop_reading:
            self._idle = True
            try:
                msg = await self.ws.receive()
            finally:
                self._idle = False
            if msg.type == WSMsgType.TEXT:
                self.binary = False
                await self._on_frame(msg.data)
            elif msg.type == WSMsgType.BINARY:
                self.binary = True
                await self._on_frame(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return

    async def _on_frame(self, data: str | bytes) -> None:
        metrics.signalling_messages.labels(direction="in").inc()
        limit = self.node.config.max_frame_bytes
        if len(data) > limit:  # characters for text frames: close enough, and cheaper than encoding
            self.error("frame_too_large", f"frames are limited to {limit} bytes")
            return
        if self.upstream is not None:
            relay = self.node.cluster.relay
            try:  # refused here, at the client's own node, rather than relayed for the host to refuse
                wire.check_depth(data, self.node.config.max_depth)
            except wire.WireError as exc:
                self.error(exc.code, exc.message)
                return
            if relay is not None:
                relay.forward(self, data)
            return
        self._frame = data
        try:
            request = wire.decode(data, self.node.config.max_depth)
        except wire.WireError as exc:
            self.error(exc.code, exc.message, exc.request_id)
            return
        try:
            await self._dispatch(request)
        except AuthError as exc:
            self.error(exc.code, exc.message, request.id)
            self.close_after_flush(exc.close_code, exc.message[:120])
        except (DomainError, MediaError) as exc:
            self.error(exc.code, exc.message, request.id, getattr(exc, "retry_after", None))
        except Exception:
            log.exception("request failed", extra=self._log_context())
            self.error("internal", "the server failed to handle this request", request.id)

    async def _dispatch(self, request: wire.Message) -> None:
        match request:
            case wire.Ping():
                self.reply(request, wire_out.Pong())
            case wire.Join():
                await self._join(request)
            case _ if self.live is None or self.participant_id is None:
                raise _NotJoined("join a stage first")
            case (
                wire.SubscriberAnswer() | wire.IceCandidate(pc="subscriber") | wire.LayerSet()
            ) if self.chat_only:
                raise _ChatOnly(
                    "this connection joined without media (a console, or join with media: false): it has "
                    "no subscriber connection; join on a new connection to receive media"
                )
            case wire.SubscriberAnswer():
                self._exclusive("subscriber", request, self._subscriber_answer(request))
            case wire.PublishOffer():
                pc = "screen" if request.source == "screen" else "publisher"
                self._exclusive(pc, request, self._publish(request))
            case wire.IceCandidate():
                await self._candidates.on_candidate(request, busy=request.pc in self._busy)
            case wire.PublishMute():
                self._mute(request)
            case wire.PublishStop():
                await self._stop_publishing(request.source)
                self.reply(request, wire_out.Ok())
            case wire.Leave():
                await self._leave()
                self.reply(request, wire_out.Left())
                self.close_after_flush(CloseCode.NORMAL, "left")
            case wire.HistoryGet():
                self._history(request)
            case wire.LayerSet():
                self._layer_set(request)
            case wire.StageCommand():
                self._stage_command(request)

    def _stage_command(self, request: wire.StageCommand) -> None:
        live, pid = self._joined()
        if request.stage is not None and request.stage != live.stage.id:
            raise _WrongStage(f"this connection is on stage {live.stage.id}, not {request.stage}")
        def accepted(extra: dict[str, Any]) -> None:
            if request.id is not None:
                self.reply(request, wire_out.Ok(**extra))

        commands.run(live, pid, request, accepted)

    def _history(self, request: wire.HistoryGet) -> None:
        live, pid = self._joined()
        if request.stage is not None and request.stage != live.stage.id:
            raise _WrongStage(f"this connection is on stage {live.stage.id}, not {request.stage}")
        page = live.stage.history(pid, request.kind, request.before, request.limit, self.node.clock())
        self.reply(request, wire_out.history(page))

    def _layer_set(self, request: wire.LayerSet) -> None:
        """The viewer's layer preference goes to its receiving connection (media/bwe.py); within the
        ``layer`` rate."""
        live, pid = self._joined()
        now = self.node.clock()
        live.stage.check_rate(pid, RateClass.LAYER, now)
        if not live.media.set_preference(pid, request.preference, request.participant_id):
            raise NoOffer("this participant has no receiving connection")
        live.stage.spend_rate(pid, RateClass.LAYER, now)
        self.reply(request, wire_out.Ok())

    # --- requests ----------------------------------------------------------------------------

    async def _join(self, request: wire.Join) -> None:
        if self.live is not None:
            raise _AlreadyJoined("this connection has already joined a stage")
        node = self.node
        found = await admission.admit(
            node, request, self.query_token, self.observer, gone=lambda: self._closing
        )
        if isinstance(found, Owner):
            self._serve_through(found, request, self.observer or request.observer)
            return
        if found is None:
            return  # the client went away meanwhile
        live, claims, role, observer = found.live, found.claims, found.role, found.observer
        if role is Role.HOST and not observer:
            await self._replace_own_host_connection(live, claims.identity)
        # A join's announcement and its list grow with the audience: in a wave, joins take turns
        # (one per loop pass), so comments, pings and timers are served between two of them.
        await node.join_turns.wait()
        if self._closing:
            return
        pid = node.new_participant_id(live)
        name = f"Console: {found.name}"[:64] if observer else found.name
        grants = None if claims.admin else claims.grants
        chat_only = observer or not request.media

        def joined(events: list[Event]) -> None:
            self.claims = claims
            self.chat_only = chat_only
            self.live, self.participant_id = live, pid
            live.connections[pid] = self
            self.moderator_view = live.stage.is_moderator(pid)
            self.reply(request, admission.joined_frame(node, live, pid, self.moderator_view))

        live.apply(
            lambda stage, now: stage.join(
                pid, name, role, now, identity=claims.identity, grants=grants, observer=observer
            ),
            joined,
        )
        log.info("joined", extra=self._log_context(role=str(role), observer=observer, media=not chat_only))
        if chat_only:
            return  # no subscriber peer connection: nothing of aiortc is created for this socket
        self._busy.add("subscriber")
        try:
            offer = await live.media.subscribe(pid, in_process=admission.on_stage(live, pid))
        finally:
            self._busy.discard("subscriber")
        self.send(offer)

    async def _replace_own_host_connection(self, live: LiveStage, identity: str | None) -> None:
        """The host reconnecting (a network change, a reload) before the node noticed its old socket
        died: the new connection takes over and the old one is closed (4011), rather than the host
        being refused for a stage that "already has a host" until the old socket times out."""
        host = live.stage.host
        if identity is None or host is None or host.identity != identity:
            return
        old = live.connections.get(host.id)
        if not isinstance(old, Connection) or old is self:
            return
        await old._leave()
        old.close_after_flush(CloseCode.REPLACED, "replaced by a new connection of the same identity")

    def _serve_through(self, owner: Owner, request: wire.Join, observer: bool) -> None:
        """The stage is hosted by another node: from now on this connection relays to it (a console's
        join says so to the host, which checks the token again)."""
        relay = self.node.cluster.relay
        if self.remote or relay is None:
            # Relayed to us, but the stage has moved on: the client starts again from its front node.
            self.close_after_flush(CloseCode.STAGE_MOVED, "the stage moved to another node; reconnect")
            return
        if not relay.connected:
            raise StageUnavailable("this node cannot reach the stage's node right now", 1.0)
        relay.attach(self, owner.node_id)
        frame = self._frame
        extra: dict[str, Any] = {"observer": True} if observer else {}
        if request.token is None and self.query_token:  # the host sees frames, not our URL
            extra["token"] = self.query_token
        if extra:
            frame = wire.encode({**msgspec.to_builtins(request), **extra}, False)
        relay.forward(self, frame)
        log.info("served through", extra=self._log_context(stage=request.stage, host=owner.node_id))

    def _exclusive(self, pc: str, request: wire.Message, work: Any) -> None:
        """Run an SDP exchange in the background; a second one on the same connection is refused."""
        if pc in self._busy:
            work.close()
            raise _OfferPending(f"an SDP exchange on the {pc} connection is in progress")
        self._busy.add(pc)

        async def run() -> None:
            try:
                await work
                await self._candidates.flush(pc)
            except (DomainError, MediaError) as exc:
                self.error(exc.code, exc.message, request.id)
            except Exception:
                log.exception("SDP exchange failed", extra=self._log_context())
                self.error("internal", "the server failed to handle this request", request.id)
            finally:
                self._busy.discard(pc)

        self._tasks.spawn(run())

    async def _subscriber_answer(self, request: wire.SubscriberAnswer) -> None:
        live, pid = self._joined()
        await live.media.subscriber_answer(pid, request.sdp)
        self.reply(request, wire_out.SubscriberReady())

    async def _publish(self, request: wire.PublishOffer) -> None:
        live, pid = self._joined()
        source = request.source
        if source == "screen":
            live.stage.check_may_share(pid, self.node.clock())
        else:
            live.stage.check_may_publish(pid, self.node.clock())
        answer = await live.media.publish(pid, request.sdp, source)
        if self.live is not live or pid not in live.stage.participants:
            await live.media.unpublish(pid, source)  # left while we were answering
            return
        kinds = live.media.kinds_published(pid, source)
        try:
            live.apply(
                lambda stage, now: (
                    stage.start_sharing(pid, kinds, now)
                    if source == "screen"
                    else stage.start_publishing(pid, kinds, now)
                ),
                lambda events: self.reply(request, wire_out.PublishAnswer(sdp=answer)),
            )
        except DomainError:
            if source == "screen":  # e.g. a share that sends no video: nothing of it is kept
                await live.media.unpublish(pid, source)
            raise

    def _mute(self, request: wire.PublishMute) -> None:
        live, pid = self._joined()
        live.apply(
            lambda stage, now: (
                stage.set_share_muted(pid, request.kind, request.muted, now)
                if request.source == "screen"
                else stage.set_muted(pid, request.kind, request.muted, now)
            ),
            lambda events: self.reply(request, wire_out.Ok()),
        )

    async def _stop_publishing(self, source: str = "camera") -> None:
        live, pid = self._joined()
        # before any await: events leave in seq order (clients, shared log)
        if source == "screen":
            live.apply(lambda stage, now: stage.stop_sharing(pid, now))
        else:
            live.apply(lambda stage, now: stage.stop_publishing(pid, now))
        await live.media.unpublish(pid, source)

    def _refuse_candidate(self, message: str, request_id: Any) -> None:
        self.error("invalid_message", message, request_id)

    def _peer_connection(self, name: str) -> IcePeer | None:
        live, pid = self._joined()
        if name == "subscriber":
            return live.media.subscriber_peer(pid)
        publisher = (live.media.shares if name == "screen" else live.media.publishers).get(pid)
        return publisher.pc if publisher is not None else None

    async def _leave(self) -> None:
        relay = self.node.cluster.relay
        if self.upstream is not None and relay is not None:
            relay.detach(self)
        live, pid = self.live, self.participant_id
        if live is None or pid is None:
            return
        self.live = self.participant_id = None
        live.connections.pop(pid, None)
        # before any await: events leave in seq order (clients, shared log)
        live.apply(lambda stage, now: stage.leave(pid, now))
        await live.media.remove(pid)
        log.info("left", extra={"stage": live.stage.id, "participant": pid})

    # --- helpers -----------------------------------------------------------------------------

    def _joined(self) -> tuple[LiveStage, str]:
        if self.live is None or self.participant_id is None:
            raise _NotJoined("join a stage first")
        return self.live, self.participant_id

    def _log_context(self, **extra: Any) -> dict[str, Any]:
        stage = self.live.stage.id if self.live else None
        return {"stage": stage, "participant": self.participant_id, **extra}


_direct_uncounted = 0


def _count_direct() -> None:
    """Count a direct write in ``signalling_messages{direction="out"}``, once per loop pass for all
    of them: prometheus-client's ``inc`` (a lock, ~1 µs) was a tenth of a delivery's cost."""
    global _direct_uncounted
    _direct_uncounted += 1
    if _direct_uncounted == 1:
        asyncio.get_running_loop().call_soon(_flush_direct_count)


def _flush_direct_count() -> None:
    global _direct_uncounted
    metrics.signalling_messages.labels(direction="out").inc(_direct_uncounted)
    _direct_uncounted = 0

class _NotJoined(DomainError):
    code = "not_joined"


class _AlreadyJoined(DomainError):
    code = "already_joined"


class _ChatOnly(DomainError):
    code = "chat_only"


class _OfferPending(DomainError):
    code = "offer_pending"


class _WrongStage(DomainError):
    code = "wrong_stage"
