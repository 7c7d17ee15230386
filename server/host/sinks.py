"""Where a hosted stage's events go once the domain has accepted a change (``LiveStage.apply``), each
sink called with every batch, in ``seq`` order:

- ``FanOut``: each event to exactly the people its ``audience()`` names, encoded once; and the media
  follows the domain (a demoted speaker is unpublished, a moderator mute pauses forwarding, a removed
  person is disconnected after the notice, an ended stage closes everyone);
- ``Hooks``: the platform's webhooks (the hosting node sends them: one delivery per event across nodes);
- ``RecorderSink``: the recording session, started and stopped by the events themselves.
(The shared log is the first sink: ``server.routing.stagelog.StageLog.push``.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from recording.session import SessionRecorder
from recording.signing import NodeKey, SigningKeyError
from recording.vault import KeyRing
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
from rooms.stage import Stage, StageState
from server import wire_out
from server.closecodes import CloseCode
from server.host.webhooks import Webhooks
from server.routing.ledgerheads import LedgerHeadPublisher
from server.wire import Outgoing

if TYPE_CHECKING:
    from media.room import MediaRoom
    from server.host.client import Client


class LiveStage(Protocol):
    """What the sinks need of the stage they serve (``server.host.live.LiveStage``, their owner)."""

    stage: Stage
    media: MediaRoom
    connections: dict[str, Client]
    clock: Callable[[], float]
    hooks: Hooks | None

    def spawn(self, work: Any) -> None: ...

    def apply(
        self, change: Callable[[Stage, float], list[Event]], then: Callable[[list[Event]], None] | None = None
    ) -> list[Event]: ...

log = logging.getLogger(__name__)


class FanOut:
    """Events to the people who may see them; the media follows the domain."""

    def __init__(self, live: LiveStage) -> None:
        self.live = live
        self._sent_snapshots: dict[str, dict[str, object]] = {}

    def __call__(self, events: list[Event]) -> None:
        self._sent_snapshots = {}
        for event in events:
            match event:
                case ParticipantJoined(participant=pid):
                    self._participant_event(event, wire_out.ParticipantJoinedMessage, pid, exclude=pid)
                case ParticipantLeft(participant=pid):
                    self._broadcast(event, exclude=pid)  # as it is: it names the person by id
                case ParticipantUpdated(participant=pid):
                    self._participant_event(event, wire_out.ParticipantUpdatedMessage, pid)
                    self._reconcile_media(pid)
                    self._refresh_if_promoted(pid)
                case PublishingStarted(participant=pid):
                    self._participant_event(event, wire_out.ParticipantUpdatedMessage, pid)
                case PublishingStopped(participant=pid, source=source):
                    self._participant_event(event, wire_out.ParticipantUpdatedMessage, pid)
                    self.live.spawn(self.live.media.unpublish(pid, source))
                case ParticipantRemoved():
                    self._to_audience(event)
                    self._disconnect_removed(event)
                case StageEnded():
                    self._to_audience(event)
                    self._end()
                case _:
                    self._to_audience(event)

    def _broadcast(self, message: msgspec.Struct, *, exclude: str | None = None) -> None:
        outgoing = Outgoing(message)
        for pid, conn in list(self.live.connections.items()):
            if pid != exclude:
                conn.send(outgoing)

    def _participant_event(
        self,
        event: Event,
        kind: type[wire_out.ParticipantEvent],
        pid: str,
        exclude: str | None = None,
    ) -> None:
        person = self.live.stage.participants.get(pid)
        if person is None:
            return
        snapshot = person.snapshot()
        if kind is wire_out.ParticipantUpdatedMessage and self._sent_snapshots.get(pid) == snapshot:
            return  # e.g. a demotion: role and publishing change in one command, one update
        self._sent_snapshots[pid] = snapshot
        message = kind(
            stage_id=event.stage, seq=event.seq, at=event.at, participant=wire_out.participant(snapshot)
        )
        self._broadcast(message, exclude=exclude)

    def _to_audience(self, event: Event) -> None:
        audience = event.audience()
        stage = self.live.stage
        outgoing = Outgoing(event)  # the domain's event is its own wire message
        for pid, conn in list(self.live.connections.items()):
            if (
                audience.everyone
                or pid in audience.persons
                or (audience.moderators and stage.is_moderator(pid))
            ):
                conn.send(outgoing)

    def _refresh_if_promoted(self, pid: str) -> None:
        """Someone who just became (or stopped being) a moderator gets the stage as they may now
        see it: drafts, live counts and voters were never sent to them as events."""
        conn = self.live.connections.get(pid)
        if conn is None:
            return
        moderator = self.live.stage.is_moderator(pid)
        if moderator != conn.moderator_view:
            conn.moderator_view = moderator
            conn.send(wire_out.State(state=wire_out.stage_state(self.live.stage.snapshot_for(pid))))

    def _reconcile_media(self, pid: str) -> None:
        """Forwarding follows the domain: paused while the speaker or a moderator muted it."""
        person = self.live.stage.participants.get(pid)
        if person is None:
            return
        snapshot: Any = person.snapshot()
        for kind in ("audio", "video"):
            if snapshot["publishing"][kind]:
                paused = bool(snapshot["muted"][kind] or snapshot["moderator_muted"][kind])
                self.live.media.set_muted(pid, kind, paused)
            if snapshot["sharing"][kind]:  # a screen share: its own mutes (rooms/sharing.py)
                self.live.media.set_muted(pid, kind, bool(snapshot["share_muted"][kind]), "screen")

    def _disconnect_removed(self, event: ParticipantRemoved) -> None:
        conn = self.live.connections.get(event.participant_id)
        if conn is None:
            return
        code = CloseCode.BANNED if event.banned else CloseCode.REMOVED
        conn.close_after_flush(code, "banned" if event.banned else "removed")

    def _end(self) -> None:
        for conn in list(self.live.connections.values()):
            conn.close_after_flush(CloseCode.NORMAL, "stage ended")
        self.live.spawn(self.live.media.close())


class Hooks:
    """The platform's webhooks for a stage's events."""

    def __init__(self, stage: Stage, webhooks: Webhooks) -> None:
        self.stage = stage
        self.webhooks = webhooks
        self._people: dict[str, dict[str, str]] = {}  # for participant.left hooks
        self._announced = False  # stage.started sent

    def announce(self) -> None:
        if not self._announced and self.stage.state is StageState.LIVE:
            self._announced = True
            self.webhooks.emit(
                "stage.started",
                {"stage_id": self.stage.id, "title": self.stage.title, "club_id": self.stage.club_id},
            )

    def __call__(self, events: list[Event]) -> None:
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

    def recording_ready(self, recorder: SessionRecorder) -> None:
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


class RecorderSink:
    """The stage's recording session: ``recording.started`` starts one, ``recording.stopped`` ends it;
    in between it gets every event (the timeline) and taps the media as far as each person consented."""

    def __init__(
        self,
        live: LiveStage,
        root: Path,
        signing_key: Callable[[], NodeKey] | None = None,
        heads: LedgerHeadPublisher | None = None,
        ring: KeyRing | None = None,
    ) -> None:
        self.live = live
        self.ring = ring if ring is not None else KeyRing()  # people's live keys (the node's)
        self.root = root
        self.signing_key = signing_key  # the node's key, read or made on first use
        self.heads = heads  # signed ledger heads to the shared backend
        self.recorder: SessionRecorder | None = None
        # Called with (stage, session) once a session's files are complete (erasures waiting on it).
        self.after_stop: Callable[[str, str], Awaitable[None]] | None = None

    def __call__(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, RecordingStarted):
                self._start(event.session_id, event.at)
        recorder = self.recorder
        if recorder is None:
            return
        recorder.on_events(events)
        if any(isinstance(e, RecordingStopped) for e in events):
            self.recorder = None
            self.live.spawn(self._stop(recorder))

    def sync(self) -> None:
        if self.recorder is not None:
            self.recorder.sync()

    def _start(self, session_id: str, now: float) -> None:
        live = self.live

        def failed(reason: str) -> None:
            # The recorder stopped by itself (a full disk...): the stage stops recording and
            # everyone, moderators included, is told why; the live stage goes on.
            live.apply(lambda stage, now: stage.recording_failed(session_id, reason, now))

        heads = self.heads
        try:
            key = self.signing_key() if self.signing_key is not None else None
            self.recorder = SessionRecorder(
                self.root,
                live.stage,
                live.media,
                session_id,
                now,
                failed,
                clock=live.clock,
                signing_key=key,
                on_head=heads.push if heads is not None else None,
                ring=self.ring,
            )
        except (OSError, SigningKeyError) as exc:
            log.error("recording could not start", exc_info=exc, extra={"stage": live.stage.id})
            why = "cannot write recordings" if isinstance(exc, OSError) else "cannot use the signing key"
            reason = f"{why}: {exc}"
            live.apply(lambda stage, now: stage.recording_failed(session_id, reason, now))

    async def _stop(self, recorder: SessionRecorder) -> None:
        await recorder.stop(self.live.clock())
        if self.after_stop is not None:
            try:
                await self.after_stop(recorder.stage.id, recorder.session_id)
            except Exception:
                log.exception("erasure after the stop failed", extra={"stage": recorder.stage.id})
        if self.live.hooks is not None:
            self.live.hooks.recording_ready(recorder)

    async def close(self) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            await self._stop(recorder)
        if self.heads is not None:
            await self.heads.flush(2.0)
            await self.heads.close()
