"""The node's stages: each pairs the domain state (rooms.Stage) with its media (media.MediaRoom)
and the signalling connections of the people in it.

``LiveStage.deliver`` is where domain events leave the domain: each goes to exactly the people its
``audience()`` names, encoded once, and the media follows the domain (a demoted speaker is
unpublished, a moderator mute pauses forwarding, a removed person is disconnected).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from media.room import MediaRoom
from media.tasks import OwnedTasks
from recording.session import SessionRecorder
from recording.signing import NodeKey, SigningKeyError
from rooms import durable
from rooms.errors import StageExists, StageNotFound
from rooms.events import (
    Event,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantRemoved,
    ParticipantUpdated,
    PublishingStarted,
    PublishingStopped,
    RecordingStarted,
    RecordingStopped,
    StageEnded,
    StageUpdated,
)
from rooms.stage import Stage, StageSettings, StageState
from server.auth import CLOSE_FORBIDDEN, Authenticator, Forbidden, parse_keys
from server.backend import BackendError, Lease, Owner
from server.clubs import ClubStore
from server.cluster import CLOSE_STAGE_MOVED, Cluster, StageLog
from server.config import Config
from server.ledger_heads import LedgerHeadPublisher
from server.outbox import Outgoing
from server.webhooks import Webhooks

if TYPE_CHECKING:
    from server.signalling import Connection

log = logging.getLogger(__name__)

CLOSE_REMOVED = 4003
CLOSE_BANNED = 4004
TICK_S = 0.25  # reactions are aggregated per second; poll timers need no finer grain


@dataclass
class LiveStage:
    stage: Stage
    media: MediaRoom
    recordings_root: Path
    clock: Callable[[], float] = time.time
    connections: dict[str, Connection] = field(default_factory=dict)
    recorder: SessionRecorder | None = None
    stage_log: StageLog | None = None  # where events go to the shared log (set once hosted)
    webhooks: Webhooks | None = None
    signing_key: Callable[[], NodeKey] | None = None  # the node's key, read or made on first use
    ledger_heads: LedgerHeadPublisher | None = None  # signed ledger heads to the shared backend
    _people: dict[str, dict[str, str]] = field(default_factory=dict)  # for participant.left hooks
    _announced: bool = False  # stage.started sent
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _ticker: asyncio.Task[None] | None = None
    _sent_snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)

    # --- output ------------------------------------------------------------------------------

    def send(self, participant_id: str, message: dict[str, Any] | Outgoing) -> None:
        conn = self.connections.get(participant_id)
        if conn is not None:
            conn.send(message)

    def broadcast(self, message: dict[str, Any], *, exclude: str | None = None) -> None:
        outgoing = Outgoing(message)
        for pid, conn in list(self.connections.items()):
            if pid != exclude:
                conn.send(outgoing)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def new_session_id(self, now: float) -> str:
        """Sortable and unique: ``20261126T140305Z-3f2a``."""
        return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(2)

    def deliver(self, events: list[Event]) -> None:
        """Send each event to the people who may see it; make the media follow the domain."""
        if events and self.stage_log is not None:
            self.stage_log.push(events)
        if events and self.webhooks is not None:
            self._hooks(events)
        self._sent_snapshots = {}
        for event in events:
            match event:
                case ParticipantJoined(participant=pid):
                    self._participant_event(event, "participant.joined", pid, exclude=pid)
                case ParticipantLeft(participant=pid):
                    message = {
                        "type": "participant.left",
                        "stage_id": event.stage,
                        "seq": event.seq,
                        "at": event.at,
                        "participant_id": pid,
                    }
                    self.broadcast(message, exclude=pid)
                case ParticipantUpdated(participant=pid):
                    self._participant_event(event, "participant.updated", pid)
                    self._reconcile_media(pid)
                    self._refresh_if_promoted(pid)
                case PublishingStarted(participant=pid):
                    self._participant_event(event, "participant.updated", pid)
                case PublishingStopped(participant=pid):
                    self._participant_event(event, "participant.updated", pid)
                    self._tasks.spawn(self.media.unpublish(pid))
                case ParticipantRemoved():
                    self._to_audience(event)
                    self._disconnect_removed(event)
                case StageEnded():
                    self._to_audience(event)
                    self._end()
                case RecordingStarted(session_id=session_id):
                    self._to_audience(event)
                    self._start_recorder(session_id, event.at)
                case _:
                    self._to_audience(event)
        recorder = self.recorder
        if recorder is not None:
            recorder.on_events(events)
            if any(isinstance(e, RecordingStopped) for e in events):
                self.recorder = None
                self._tasks.spawn(self._stop_recorder(recorder))
        if self.stage.recording_due:
            self.deliver(self.stage.start_auto_recording(self.new_session_id(self.clock()), self.clock()))

    # --- webhooks (the hosting node sends them: one delivery per event across the nodes) -------

    def announce(self) -> None:
        """``stage.started`` once the stage is live (at creation, or when its host starts it)."""
        if self.webhooks is not None and not self._announced and self.stage.state is StageState.LIVE:
            self._announced = True
            self.webhooks.emit(
                "stage.started",
                {"stage_id": self.stage.id, "title": self.stage.title, "club_id": self.stage.club_id},
            )

    def _hooks(self, events: list[Event]) -> None:
        assert self.webhooks is not None
        for event in events:
            match event:
                case ParticipantJoined(participant=pid):
                    person = self.stage.participants.get(pid)
                    if person is not None:
                        info = {"identity": person.identity, "name": person.name, "role": str(person.role)}
                        self._people[pid] = info
                        self.webhooks.emit(
                            "participant.joined", {"stage_id": self.stage.id, "participant_id": pid, **info}
                        )
                case ParticipantLeft(participant=pid):
                    info = self._people.pop(pid, {})
                    self.webhooks.emit(
                        "participant.left", {"stage_id": self.stage.id, "participant_id": pid, **info}
                    )
                case StageEnded():
                    self.webhooks.emit("stage.ended", {"stage_id": self.stage.id, "title": self.stage.title})
                case StageUpdated():
                    self.announce()
                case _:
                    pass

    async def _stop_recorder(self, recorder: SessionRecorder) -> None:
        await recorder.stop(self.clock())
        if self.webhooks is not None:
            manifest = recorder.manifest()
            self.webhooks.emit(
                "recording.ready",
                {
                    "stage_id": self.stage.id,
                    "session_id": recorder.session_id,
                    "status": manifest["status"],
                    "manifest": f"/api/stages/{self.stage.id}/recordings/{recorder.session_id}",
                    "files": [t["file"] for t in manifest["tracks"]]
                    + ["timeline.json", "consent.jsonl", "manifest.json"],
                },
            )

    # --- recording ---------------------------------------------------------------------------

    def _start_recorder(self, session_id: str, now: float) -> None:
        def failed(reason: str) -> None:
            # The recorder stopped by itself (a full disk...): the stage stops recording and
            # everyone, moderators included, is told why; the live stage goes on.
            self.deliver(self.stage.recording_failed(session_id, reason, self.clock()))

        heads = self.ledger_heads
        try:
            key = self.signing_key() if self.signing_key is not None else None
            self.recorder = SessionRecorder(
                self.recordings_root,
                self.stage,
                self.media,
                session_id,
                now,
                failed,
                clock=self.clock,
                signing_key=key,
                on_head=heads.push if heads is not None else None,
            )
        except (OSError, SigningKeyError) as exc:
            log.error("recording could not start", exc_info=exc, extra={"stage": self.stage.id})
            why = "cannot write recordings" if isinstance(exc, OSError) else "cannot use the signing key"
            self.deliver(self.stage.recording_failed(session_id, f"{why}: {exc}", self.clock()))

    def _participant_event(self, event: Event, type_: str, pid: str, exclude: str | None = None) -> None:
        person = self.stage.participants.get(pid)
        if person is None:
            return
        snapshot = person.snapshot()
        if type_ == "participant.updated" and self._sent_snapshots.get(pid) == snapshot:
            return  # e.g. a demotion: role and publishing change in one command, one update
        self._sent_snapshots[pid] = snapshot
        message = {
            "type": type_,
            "stage_id": event.stage,
            "seq": event.seq,
            "at": event.at,
            "participant": snapshot,
        }
        self.broadcast(message, exclude=exclude)

    def _to_audience(self, event: Event) -> None:
        audience = event.audience()
        outgoing = Outgoing(msgspec.to_builtins(event))
        for pid, conn in list(self.connections.items()):
            if (
                audience.everyone
                or pid in audience.persons
                or (audience.moderators and self.stage.is_moderator(pid))
            ):
                conn.send(outgoing)

    def _refresh_if_promoted(self, pid: str) -> None:
        """Someone who just became (or stopped being) a moderator gets the stage as they may now
        see it: drafts, live counts and voters were never sent to them as events."""
        conn = self.connections.get(pid)
        if conn is None:
            return
        moderator = self.stage.is_moderator(pid)
        if moderator != conn.moderator_view:
            conn.moderator_view = moderator
            conn.send({"type": "state", "state": self.stage.snapshot_for(pid)})

    def _reconcile_media(self, pid: str) -> None:
        """Forwarding follows the domain: paused while the speaker or a moderator muted it."""
        person = self.stage.participants.get(pid)
        if person is None:
            return
        snapshot: Any = person.snapshot()
        for kind in ("audio", "video"):
            if snapshot["publishing"][kind]:
                paused = bool(snapshot["muted"][kind] or snapshot["moderator_muted"][kind])
                self.media.set_muted(pid, kind, paused)

    def _disconnect_removed(self, event: ParticipantRemoved) -> None:
        conn = self.connections.get(event.participant_id)
        if conn is None:
            return
        code = CLOSE_BANNED if event.banned else CLOSE_REMOVED
        conn.close_after_flush(code, "banned" if event.banned else "removed")

    def _end(self) -> None:
        for conn in list(self.connections.values()):
            conn.close_after_flush(1000, "stage ended")
        self._tasks.spawn(self.media.close())

    # --- time --------------------------------------------------------------------------------

    def start_ticker(self, clock: Callable[[], float]) -> None:
        self._ticker = asyncio.create_task(self._tick(clock))

    async def _tick(self, clock: Callable[[], float]) -> None:
        """Aggregated reactions and poll timers: the domain says what is due at ``now``."""
        while True:
            await asyncio.sleep(TICK_S)
            try:
                now = clock()
                self.deliver(self.stage.flush_reactions(now) + self.stage.tick(now))
                if self.recorder is not None:
                    self.recorder.sync()  # a publication that just got its codec starts recording
            except Exception:
                log.exception("stage tick failed", extra={"stage": self.stage.id})

    # --- tasks -------------------------------------------------------------------------------

    def __post_init__(self) -> None:
        self._tasks = OwnedTasks(log, "stage", stage=self.stage.id)

    async def close(self, code: int = 1001, reason: str = "node shutting down") -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self.recorder is not None:
            await self._stop_recorder(self.recorder)
            self.recorder = None
        if self.ledger_heads is not None:
            await self.ledger_heads.flush(2.0)
            await self.ledger_heads.close()
        for conn in list(self.connections.values()):
            await conn.close(code, reason)
        await self.media.close()
        await self._tasks.cancel_all()
        if self._ticker is not None:
            await asyncio.gather(self._ticker, return_exceptions=True)


class Node:
    """The stages this node hosts, and its place among the nodes (``Cluster``)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.stages: dict[str, LiveStage] = {}
        self.cluster = Cluster(self, config)
        self.auth = Authenticator(parse_keys(config.api_keys), clock)
        self.webhooks = Webhooks.from_config(config, self.cluster.node_id)
        self.clubs = ClubStore(self.cluster.backend, clock)
        self._tasks = OwnedTasks(log, "node")
        self._locating: dict[str, asyncio.Lock] = {}
        self.recordings_root = Path(config.recordings_dir)
        self._signing_key: NodeKey | None = None
        self.settings = StageSettings(
            recording_mode=config.recording_mode,
            consent_policy_version=config.consent_policy_version,
            speaking_requires_consent=config.speaking_requires_consent,
            max_publishers=config.media_slots,
            comment_max_chars=config.comment_max_chars,
            comment_history=config.comment_history,
            comment_rate=config.comment_rate,
            comment_rate_window_s=config.comment_rate_window_s,
        )

    async def start(self) -> None:
        if self.auth.dev:
            log.warning(
                "DEVELOPMENT MODE: no API keys configured, anyone may mint access tokens at "
                "/api/dev/token; set MEDSTAGE_API_KEYS for anything real"
            )
        await self.cluster.start()
        await self.webhooks.start()

    async def check_not_revoked(self, identity: str) -> None:
        """Revocations are shared by all nodes; during a backend outage they cannot be read, and
        joins on the node hosting the stage go on (its own stage bans still hold)."""
        try:
            revoked = await self.cluster.backend.is_revoked(identity)
        except BackendError:
            log.warning("revocations unreadable: join allowed", extra={"identity": identity})
            return
        if revoked:
            raise Forbidden("identity_revoked", "this identity's access has been revoked")

    async def revoke(self, identity: str) -> int:
        """Refuse the identity everywhere from now on, and disconnect it: from this node's stages here,
        and from every other node's stages through their inboxes (at most once: a node that misses
        the message still refuses the identity's next join and /api call)."""
        await self.cluster.backend.revoke(identity)
        relay = self.cluster.relay
        if relay is not None:
            try:
                peers = await self.cluster.backend.nodes() - {self.cluster.node_id}
            except BackendError:
                peers = set()
            for peer in peers:
                relay.enqueue(peer, ["r", identity])
        return self.revoke_here(identity)

    def revoke_here(self, identity: str) -> int:
        """Close the identity's connections to the stages this node hosts (relayed ones included)."""
        closed = 0
        for live in self.stages.values():
            people = {**live.stage.participants, **live.stage.observers}  # consoles too
            for pid, person in people.items():
                if person.identity == identity and pid in live.connections:
                    live.connections[pid].close_after_flush(CLOSE_FORBIDDEN, "access revoked")
                    closed += 1
        return closed

    def signing_key(self) -> NodeKey:
        """The key that signs consent ledger heads: read, or created, at the first recording (a few
        small blocking writes, once per node) and published beside the recordings."""
        if self._signing_key is None:
            key = NodeKey.load_or_create(self.config.signing_key_path)
            key.publish(self.recordings_root)
            log.info("ledger signing key", extra={"key_id": key.id, "path": str(key.path)})
            self._signing_key = key
        return self._signing_key

    def spawn(self, work: Any) -> None:
        self._tasks.spawn(work)

    async def create_stage(
        self, stage_id: str | None, title: str | None, scheduled: bool = False, club_id: str | None = None
    ) -> LiveStage:
        stage_id = stage_id or secrets.token_urlsafe(6).replace("_", "x").replace("-", "y")
        if stage_id in self.stages:
            raise StageExists(f"stage {stage_id} already exists")
        lease = await self.cluster.claim_new(stage_id)
        if stage_id in self.stages:  # created here meanwhile
            raise StageExists(f"stage {stage_id} already exists")
        state = StageState.SCHEDULED if scheduled else StageState.LIVE
        stage = Stage(
            stage_id, title or stage_id, self.clock(), settings=self.settings, state=state, club_id=club_id
        )
        live = self._host(stage, lease)
        if stage.recording_due:
            live.deliver(stage.start_auto_recording(live.new_session_id(self.clock()), self.clock()))
        log.info("stage created", extra={"stage": stage_id, "node": self.cluster.node_id})
        return live

    async def locate(
        self, stage_id: str, *, create: bool = False, club_id: str | None = None
    ) -> LiveStage | Owner:
        """The stage if this node hosts it (taking it over if its host is gone), else its host.
        With ``create``, a stage that never existed is created here."""
        live = self.stages.get(stage_id)
        if live is not None:
            return live
        lock = self._locating.setdefault(stage_id, asyncio.Lock())
        try:
            async with lock:  # two joins racing for a stage restore it once
                live = self.stages.get(stage_id)
                if live is not None:
                    return live
                try:
                    found = await self.cluster.find(stage_id)
                except StageNotFound:
                    if not create:
                        raise
                    return await self.create_stage(stage_id, None, club_id=club_id)
                if isinstance(found, Owner):
                    return found
                lease, state, last_seq = found
                stage = durable.restore(state, last_seq=last_seq, now=self.clock())
                log.warning(
                    "stage taken over",
                    extra={"stage": stage_id, "node": self.cluster.node_id, "seq": last_seq},
                )
                return self._host(stage, lease)
        finally:
            if not lock.locked() and self._locating.get(stage_id) is lock:
                del self._locating[stage_id]

    def _host(self, stage: Stage, lease: Lease) -> LiveStage:
        stage_id = stage.id
        live: LiveStage

        def notify(participant_id: str, message: dict[str, Any]) -> None:
            live.send(participant_id, message)

        media = MediaRoom(stage_id, self.config.media, notify)
        live = LiveStage(stage, media, self.recordings_root, self.clock)
        live.stage_log = self.cluster.hosting(live, lease)
        live.webhooks = self.webhooks
        live.signing_key = self.signing_key
        live.ledger_heads = LedgerHeadPublisher(self.cluster.backend, stage_id)
        live.announce()
        live.start_ticker(self.clock)
        self.stages[stage_id] = live
        return live

    async def let_go(self, live: LiveStage) -> None:
        """Another node hosts this stage now (our lease lapsed and was taken): its clients go there."""
        if self.stages.get(live.stage.id) is not live:
            return
        del self.stages[live.stage.id]
        await self.cluster.stop_hosting(live.stage.id, release=False)
        await live.close(CLOSE_STAGE_MOVED, "the stage moved to another node; reconnect")

    def get(self, stage_id: str) -> LiveStage:
        live = self.stages.get(stage_id)
        if live is None:
            raise StageNotFound(f"stage {stage_id} does not exist")
        return live

    def new_participant_id(self, live: LiveStage) -> str:
        while True:
            pid = "p-" + secrets.token_hex(4)
            if pid not in live.stage.participants:
                return pid

    def stage_info(self, live: LiveStage) -> dict[str, Any]:
        return {
            **live.stage.snapshot(),
            "club_id": live.stage.club_id,
            "node": self.cluster.node_id,
            "participants": len(live.stage.participants),
            "publishers": len(live.stage.publishers),
            "url": f"{self.config.url}/s/{live.stage.id}",
        }

    def club_stages(self, club_id: str) -> list[dict[str, Any]]:
        """The club's stages hosted here, and who is in each (for the club's admins)."""
        return [
            {
                **self.stage_info(live),
                "participants": [
                    {"id": p.id, "name": p.name, "role": str(p.role), "identity": p.identity}
                    for p in live.stage.participants.values()
                ],
            }
            for live in self.stages.values()
            if live.stage.club_id == club_id
        ]

    async def close(self) -> None:
        for live in list(self.stages.values()):
            await live.close()
        await self.cluster.close()
        await self.webhooks.close(drain_s=self.config.shutdown_timeout_s / 2)
        await self._tasks.cancel_all()
