"""One recording session of a stage: consent-gated track writers, the timeline, the ledger, the manifest.

Layout of a session directory (``<root>/<stage>/<session>/``)::

    manifest.json      participants, tracks, files, start times for A/V alignment, consent status
    consent.jsonl      the hash-chained consent ledger (recording/ledger.py)
    consent.heads.jsonl  the ledger's head signed by the node's key after each append and at the stop
                       (recording/signing.py)
    timeline.msgpack   the stage's events as recorded (redacted where consent is missing)
    timeline.json      its JSON export, written when the session ends
    tracks/<participant>-<kind>-<n>.webm|.mkv   one file per participant per track per capture
    tracks/<participant>-screen-<kind>-<n>.webm|.mkv   the same for a screen share (its own tracks)

A track is sealed with its publisher's key when they have one in the ring (``….webm.sealed``,
recording/sealed.py; the manifest's entry says ``sealed`` and ``key_id``); a person without a key (the
key store could not answer when they joined) is recorded as before.

Capture follows consent: a track is recorded only while its publisher's consent covers ``media`` (a
screen share's tracks too: sharing is publishing media),
and the recorder re-checks after every event batch, so a withdrawal stops the capture in the same
loop iteration that recorded it in the ledger (well within a second).

Disk: the ledger's entries, the signed heads and the manifest end with an fsync each; they are
prepared on the event loop (in the order the events came) and written by the session's one
``DiskQueue`` thread in that order, so a slow disk never stalls the node's stages, and ``stop`` returns
only once all of them are on disk.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from media.aiortc_hooks import payloads
from media.assembler import Frame
from media.publication import Publication
from media.room import MediaRoom
from media.toplayer import TopLayerTap
from recording.diskqueue import DiskQueue
from recording.items import Sealer
from recording.ledger import Ledger
from recording.signing import HEADS_FILENAME, NodeKey, SignedHead, append_head, public_text, write_atomic
from recording.timeline import TimelineWriter, export_json, redact
from recording.vault import KeyRing
from recording.writer import TrackWriter
from rooms.consent import ConsentRecord
from rooms.events import ConsentRecorded, Event
from rooms.stage import Stage

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1


@dataclass
class _Capture:
    participant_id: str
    kind: str
    publication: Publication
    writer: TrackWriter
    detach: Callable[[], None]  # stops the frames coming
    started_at: float
    ended_at: float | None = None
    failed: str | None = None
    noted: bool = False  # the manifest has its first frame's time

    def entry(self, root: Path) -> dict[str, Any]:
        w = self.writer
        return {
            "participant_id": self.participant_id,
            "kind": self.kind,
            "source": self.publication.source,  # "camera" or "screen"
            "codec": w.codec.name,
            "file": os.path.relpath(w.path, root),
            "capture_started_at": self.started_at,
            "capture_ended_at": self.ended_at,
            # pts 0 of the file is this wall-clock time: align tracks with it.
            "first_frame_at": w.first_wall_time,
            "duration_s": round(w.written_duration, 3),
            "frames": w.stats.frames_written,
            "bytes": w.stats.bytes_written,
            "dropped_frames": w.stats.dropped,
            "finalized": w.finalized is not None,
            "error": self.failed,
            # Sealed with the publisher's key (recording/sealed.py): erasing it shreds the file.
            "sealed": w.key is not None,
            "key_id": None if w.key is None else w.key.key_id,
        }


@dataclass
class SessionRecorder:
    root: Path
    stage: Stage
    media: MediaRoom
    session_id: str
    started_at: float
    on_failure: Callable[[str], None]  # the recording had to stop: tell moderators, stop in the domain
    clock: Callable[[], float] = time.time
    # Signs the ledger's head after each append and at the stop (None: the session is not signed).
    signing_key: NodeKey | None = None
    on_head: Callable[[SignedHead], None] | None = None  # each signed head, e.g. to the shared log
    # People's live keys (issue 15): what is recorded of a person is sealed with their key. The node
    # puts a participant's key here when they join, before anything of theirs can be recorded.
    ring: KeyRing = field(default_factory=KeyRing)
    dir: Path = field(init=False)
    captures: dict[tuple[str, str], _Capture] = field(default_factory=dict)
    finished: list[_Capture] = field(default_factory=list)
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)
    consent: dict[str, dict[str, Any]] = field(default_factory=dict)  # participant -> last record
    stopped_at: float | None = None
    status: str = "recording"
    forgotten: set[str] = field(default_factory=set)  # identities erased meanwhile: never captured
    signed: SignedHead | None = None  # the last head signed (written once its entries are)
    _parts: dict[tuple[str, str], int] = field(default_factory=dict)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)
    _manifests: int = 0  # manifests queued so far
    # Keys the per-session pseudonym of an identity (``person``): held in memory only, so the files
    # group one person's connections (reconnects) without saying, or letting anyone test, who it is.
    _person_key: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    # participant (or observer) id -> identity, kept after they leave: whose key seals their items.
    _identities: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sealer = Sealer(self.ring, self._identity_of)
        self.dir = self.root / self.stage.id / self.session_id
        (self.dir / "tracks").mkdir(parents=True, exist_ok=True)
        (self.dir / "consent.jsonl").touch()  # a session with no decision yet still has its ledger
        self.ledger = Ledger(self.dir / "consent.jsonl")
        self.disk = DiskQueue(f"{self.stage.id}/{self.session_id}", on_error=self._on_disk_error)
        loop = self._loop = asyncio.get_running_loop()
        self.timeline = TimelineWriter(
            self.dir / "timeline.msgpack",
            on_error=lambda exc: loop.call_soon_threadsafe(self._fail, f"timeline: {exc}"),
        )
        # Who was there when recording started (later arrivals have participant.joined in the
        # timeline): the report's attendance begins at the start for them (docs/recording.md).
        self.present_at_start = [
            {"participant_id": pid, "person": self._person(p.identity), "joined_at": p.joined_at}
            for pid, p in self.stage.participants.items()
        ]
        # The consent in force when recording starts is part of the recording's ledger.
        for pid in list(self.stage.participants):
            state = self.stage.consent_of(pid)
            if state is not None and state.record is not None:
                self.consent[pid] = self._ledger_append(state.record)
            self._note_participant(pid)
        if self.ledger.count == 0:
            self._seal(final=False)  # even an empty ledger has a signed head: none was removed
        # The session exists (listed, its manifest served) as soon as recording.started goes out: the
        # first manifest is written here, as the directory was, unsynced; the queue makes it durable.
        first = self.manifest()
        tmp = self.dir / "manifest.json.first"  # not the queue's .tmp: its thread may be writing that
        tmp.write_text(json.dumps(first, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
        tmp.replace(self.dir / "manifest.json")
        self.write_manifest()
        self.sync()

    # --- events --------------------------------------------------------------------------------

    def on_events(self, events: list[Event]) -> None:
        """Called by the stage after each batch of domain events (already delivered)."""
        if self.status != "recording":
            return
        covers = self.stage.covers
        for event in events:
            data = msgspec.to_builtins(event)
            if self.forgotten:
                data = self._without_forgotten(data)
                if data is None:
                    continue
            if isinstance(event, ConsentRecorded):
                stored = self.consent[event.record.participant_id] = self._ledger_append(event.record)
                data = {**data, "record": stored}  # the timeline's copy is sealed as the ledger's
            if data.get("type") == "participant.joined":
                self._note_participant(data.get("participant_id") or data.get("participant", ""))
            self.timeline.append(self.sealer.event(redact(data, lambda pid: covers(pid, "comments"))))
        self.sync()

    # --- people --------------------------------------------------------------------------------

    def _identity_of(self, pid: str) -> str | None:
        person = self.stage.participants.get(pid) or self.stage.observers.get(pid)
        if person is not None:
            self._identities[pid] = person.identity
            return person.identity
        return self._identities.get(pid)

    def _is_forgotten(self, pid: Any) -> bool:
        return isinstance(pid, str) and self._identity_of(pid) in self.forgotten

    def _without_forgotten(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """The event without what it says of a forgotten person (None: nothing of it is kept)."""
        type_ = data.get("type")
        if type_ in ("comment.posted", "comment.pinned"):
            author = (data.get("comment") or {}).get("author_id")
        elif type_ in ("question.asked", "question.updated"):
            author = (data.get("question") or {}).get("author_id")
        elif type_ == "consent.recorded":
            author = (data.get("record") or {}).get("participant_id")
        elif type_ == "poll.voters":
            voters = data.get("voters") or {}
            return {**data, "voters": {p: c for p, c in voters.items() if not self._is_forgotten(p)}}
        elif type_ == "moderation.audit":  # a moderator's action stays; who they or their target were goes
            out = dict(data)
            if data.get("actor_identity") in self.forgotten or self._is_forgotten(data.get("actor")):
                out.update(actor_identity=None, actor_name=None)
            if data.get("target_identity") in self.forgotten or self._is_forgotten(data.get("target")):
                out.update(target_identity=None, target_name=None)
            return out
        elif type_ == "invitation" and self._is_forgotten(data.get("by")):
            return {**data, "by_name": None}
        elif type_ == "quiz.leaderboard":
            entries = data.get("entries") or ()
            return {
                **data,
                "entries": [e for e in entries if not self._is_forgotten(e.get("participant_id"))],
            }
        else:
            author = data.get("participant_id", data.get("participant"))
        return None if self._is_forgotten(author) else data

    def sync(self) -> None:
        """Capture exactly the tracks that are published and covered by their publisher's consent."""
        if self.status != "recording":
            return
        # Keyed by participant and track: the kind, or "screen-<kind>" for a screen share's.
        wanted: dict[tuple[str, str], Publication] = {}
        for source, publishers in (("camera", self.media.publishers), ("screen", self.media.shares)):
            for pid, publisher in publishers.items():
                person = self.stage.participants.get(pid)
                if person is None or not self.stage.covers(pid, "media") or person.identity in self.forgotten:
                    continue
                if self.ring.dropped(person.identity):  # erased: never recorded again, not even unsealed
                    continue
                published = person.sharing if source == "screen" else person.publishing
                for kind, pub in publisher.publications.items():
                    if kind in published and pub.mime and not pub.closed:
                        wanted[(pid, kind if source == "camera" else f"screen-{kind}")] = pub
        for key in [k for k, c in self.captures.items() if wanted.get(k) is not c.publication]:
            self._stop_capture(key)
        for key, pub in wanted.items():
            if key not in self.captures:
                self._start_capture(key, pub)
        # A capture's first frame fixes its A/V alignment: note it in the manifest as soon as it is
        # known, so even a crashed session says when each file starts.
        fresh = [c for c in self.captures.values() if c.writer.first_wall_time is not None and not c.noted]
        if fresh:
            for capture in fresh:
                capture.noted = True
            self.write_manifest()

    def forget(self, identity: str) -> list[str]:
        """The person was erased (issue 15): stop capturing them at once, and for the rest of the session;
        returns the participant ids whose capture stopped. Nothing more of theirs is recorded in this
        session (their items, events about them, their consent records; a rejoin neither), and the
        manifest loses their name and consent copy. Their writers close in the background (``stop`` and
        ``writers_closed`` wait for them); what was written of them is erased from the session's files
        once it stops (server/host/erasure.py)."""
        self.forgotten.add(identity)
        ids = {
            pid
            for pid in [*self.participants, *self.stage.participants]
            if self._identity_of(pid) == identity
        }
        stopped = sorted({key[0] for key in self.captures if key[0] in ids})
        for key in [k for k in self.captures if k[0] in ids]:
            self._stop_capture(key)
        for pid in ids & set(self.participants):
            self.participants[pid] = {**self.participants[pid], "name": None}
            self.consent.pop(pid, None)
        self.write_manifest()
        return stopped

    async def writers_closed(self) -> None:
        """Wait until every track writer stopped so far is closed (its file final)."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # --- captures ------------------------------------------------------------------------------

    def _start_capture(self, key: tuple[str, str], pub: Publication) -> None:
        pid, track = key
        kind = pub.kind
        part = self._parts.get(key, 0) + 1
        self._parts[key] = part
        loop = asyncio.get_running_loop()
        person = self.stage.participants.get(pid)
        writer = TrackWriter(
            self.dir / "tracks" / f"{pid}-{track}-{part}",
            pub.mime,
            on_error=lambda w, exc: loop.call_soon_threadsafe(self._on_writer_error, key, exc),
            # Sealed with the publisher's key when they have one (no key: the store could not answer).
            key=None if person is None else self.ring.for_identity(person.identity),
        )

        group = pub.group
        if group is not None and group.spatial:
            # A simulcast video: the highest live encoding, switched at keyframes (media/toplayer.py).
            def follow(frame: Frame, timestamp: int) -> None:
                writer.write(payloads(frame.packets), timestamp, frame.keyframe)

            top = TopLayerTap(group, follow)
            top.start()
            detach = top.stop
        else:

            def tap(frame: Frame) -> None:
                writer.write(payloads(frame.packets), frame.timestamp, frame.keyframe)

            pub.add_tap(tap)
            detach = functools.partial(pub.remove_tap, tap)
        self.captures[key] = _Capture(pid, kind, pub, writer, detach, self.clock())
        self.write_manifest()
        self._note_participant(pid)
        log.info("capture started", extra={"stage": self.stage.id, "participant": pid, "kind": track})

    def _stop_capture(self, key: tuple[str, str]) -> None:
        capture = self.captures.pop(key)
        capture.detach()
        capture.ended_at = self.clock()
        self.finished.append(capture)
        task = asyncio.ensure_future(self._close_writer(capture))
        self._closing.add(task)
        task.add_done_callback(self._closed_writer)

    def _closed_writer(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "a track file was not closed cleanly",
                exc_info=task.exception(),
                extra={"stage": self.stage.id},
            )

    async def _close_writer(self, capture: _Capture) -> None:
        await capture.writer.aclose()
        self.write_manifest()

    def _on_writer_error(self, key: tuple[str, str], exc: BaseException) -> None:
        self._fail(f"writing {key[0]}'s {key[1]}: {exc}")

    def _fail(self, reason: str) -> None:
        """A write failed (a full disk...): stop the whole recording cleanly, keep the stage going."""
        if self.status != "recording":
            return
        log.error("recording failed", extra={"stage": self.stage.id, "reason": reason})
        self.status = "failed"
        for capture in self.captures.values():
            capture.failed = capture.failed or reason
        self.on_failure(reason)

    def _ledger_append(self, record: ConsentRecord) -> dict[str, Any]:
        """Chain the record now (on the loop, in event order); the thread writes it, then its signed head.
        Returns the record as stored (identity and name sealed with the person's key)."""
        stored = self.sealer.record(msgspec.to_builtins(record), self._person(record.identity))
        if self.ledger.failed is not None:
            return stored  # the recording is failing already: nothing may follow the gap
        entry = self.ledger.prepare(stored)
        self.disk.submit("consent ledger", lambda: self.ledger.write(entry))
        self._seal(final=False)
        if hasattr(self, "timeline"):  # after start-up: keep the manifest's anchor current
            self.write_manifest()
        return stored

    def _seal(self, *, final: bool) -> None:
        """Sign the ledger's head as it will be once the queued entries are written, and queue it."""
        if self.signing_key is None:
            return
        head = self.signing_key.sign(
            SignedHead(
                stage_id=self.stage.id,
                session_id=self.session_id,
                count=self.ledger.count,
                head=self.ledger.head,
                signed_at=self.clock(),
                final=final,
                key_id=self.signing_key.id,
            )
        )
        self.signed = head
        path, ledger, loop, on_head = self.dir / HEADS_FILENAME, self.ledger, self._loop, self.on_head

        def write() -> None:
            # A head never gets ahead of the entries on disk (nor, then, its copy in the shared log):
            # after a failed entry, or a crash before it, no head claims it.
            if ledger.written < head.count:
                return
            append_head(path, head)
            if on_head is not None:
                loop.call_soon_threadsafe(on_head, head)

        self.disk.submit("signed ledger head", write)

    def _on_disk_error(self, what: str, exc: BaseException) -> None:
        if what != "manifest":  # a manifest is written again at the next change; the ledger is not
            self._fail(f"{what}: {exc}")

    def _note_participant(self, pid: str) -> None:
        person = self.stage.participants.get(pid)
        if person is None or person.identity in self.forgotten:
            return
        self._identities[pid] = person.identity
        info = {"participant_id": pid, "name": person.name, "role": str(person.role)}
        self.participants[pid] = {
            **self.sealer.name(info, person.identity),
            "person": self._person(person.identity),
        }
        # A reconnect is a new participant id under the same identity, whose decision stands without a
        # new ledger record: note it, so SharePolicy knows whose connection this is.
        state = self.stage.consent_of(pid)
        if pid not in self.consent and state is not None and state.record is not None:
            self.consent[pid] = self.sealer.record(
                msgspec.to_builtins(state.record), self._person(person.identity)
            )

    def _person(self, identity: str) -> str:
        return hmac.new(self._person_key, identity.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

    # --- manifest and stop ---------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        participants = []
        for pid, info in self.participants.items():
            participants.append({**info, "consent": self.consent.get(pid)})
        captures = [*self.finished, *self.captures.values()]
        return {
            "version": MANIFEST_VERSION,
            "stage_id": self.stage.id,
            # Who may watch the session later includes the club's members (docs/recording.md, Playback).
            "club_id": self.stage.club_id,
            "title": self.stage.title,
            "session_id": self.session_id,
            "status": self.status,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "policy_version": self.stage.settings.consent_policy_version,
            # The retention decided for this stage (its own, else its club's) when it was created;
            # null: the node's default (recording/retention.py).
            "retention_days": self.stage.settings.recording_retention_days,
            "participants": participants,
            "present_at_start": self.present_at_start,
            "tracks": [c.entry(self.dir) for c in captures],
            "timeline": "timeline.msgpack",
            "timeline_json": "timeline.json",
            "ledger": "consent.jsonl",
            # The chain's length and last hash: verify() detects records removed from the end.
            "ledger_count": self.ledger.count,
            "ledger_head": self.ledger.head,
            # The node key that signs the heads, and the last signed head (recording/signing.py).
            "ledger_heads": HEADS_FILENAME if self.signing_key is not None else None,
            "ledger_key": (
                None
                if self.signing_key is None
                else {
                    "algorithm": "Ed25519",
                    "key_id": self.signing_key.id,
                    "public_key": public_text(self.signing_key.public),
                }
            ),
            "ledger_signature": None if self.signed is None else self.signed.to_dict(),
        }

    def write_manifest(self) -> None:
        """Queue the manifest as it is now; the disk thread writes it atomically (fsync, rename)."""
        data = json.dumps(self.manifest(), indent=1, ensure_ascii=False, default=str).encode("utf-8")
        path = self.dir / "manifest.json"
        self._manifests += 1
        number = self._manifests

        def write() -> None:
            if number == self._manifests:  # else a newer one is queued behind: a burst writes one
                write_atomic(path, data)

        try:
            self.disk.submit("manifest", write)
        except RuntimeError:  # after the stop: the final manifest is already written
            log.warning("manifest change after the stop not written", extra={"stage": self.stage.id})

    async def stop(self, now: float) -> None:
        """Stop capturing at once; finalize every file; export the timeline; complete the manifest."""
        if self.stopped_at is not None:
            return
        if self.status == "recording":
            self.status = "complete"
        for key in list(self.captures):
            self._stop_capture(key)
        self.stopped_at = now
        if self.ledger.failed is None:
            self._seal(final=True)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await asyncio.to_thread(self.timeline.close)
        try:
            await asyncio.to_thread(export_json, self.dir / "timeline.msgpack")
        except OSError as exc:
            log.error("timeline export failed", exc_info=exc, extra={"stage": self.stage.id})
        self.write_manifest()
        await self.disk.aclose()  # the ledger, its signed heads and this manifest are on disk
        log.info("recording stopped", extra={"stage": self.stage.id, "session": self.session_id})
