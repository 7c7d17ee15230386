"""The session's timeline: the stage's event log as recorded, with what nobody consented to redacted.

Stored as a stream of msgpack maps (``timeline.msgpack``, one event after another, appended and
flushed as they happen, so a crash loses at most the last write) and exported as JSON
(``timeline.json``) when the session ends or on demand (``python -m recording export``).

Redaction is decided when the event happens, from the consent in force then: a comment, a question
or a vote of someone who had not granted the ``comments`` scope is stored as a placeholder that keeps
the event's place and id, never its content or author.

A person's content is stored sealed with their key (recording/items.py); the stored ``timeline.json``
keeps it sealed. ``export_json(..., ring=...)`` writes an opened copy elsewhere (for a reader).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack

from recording.items import Names, Opener
from recording.sharing import SharePolicy
from recording.vault import KeyRing

log = logging.getLogger(__name__)

REDACTED = {"redacted": True}
MAX_QUEUE = 4096


def redact(event: dict[str, Any], consented: Callable[[str], bool]) -> dict[str, Any]:
    """``event`` as it may be stored; ``consented(participant_id)``: did they grant ``comments``."""
    type_ = event.get("type")
    if type_ == "comment.posted":
        return _redact_item(event, "comment", consented)
    if type_ in ("question.asked", "question.updated"):
        return _redact_item(event, "question", consented)
    if type_ == "comment.pinned" and event.get("comment"):
        return _redact_item(event, "comment", consented)
    if type_ == "poll.voters":
        voters = event.get("voters") or {}
        kept = {pid: choices for pid, choices in voters.items() if consented(pid)}
        return {**event, "voters": kept, "redacted_voters": len(voters) - len(kept)}
    if type_ == "quiz.result":
        if consented(str(event.get("participant_id"))):
            return event
        # Whether the ballot was right stays (it names nobody): the quiz's totals stay right.
        fields = ("type", "stage_id", "seq", "at", "poll_id", "correct")
        return {k: event[k] for k in fields if k in event} | REDACTED
    return event


def _redact_item(event: dict[str, Any], field: str, consented: Callable[[str], bool]) -> dict[str, Any]:
    item = event.get(field) or {}
    if consented(str(item.get("author_id"))):
        return event
    kept = {k: item[k] for k in ("id", "at", "votes", "status") if k in item}
    return {**event, field: {**kept, **REDACTED}}


class TimelineWriter:
    """Appends events to ``timeline.msgpack`` on a thread of its own (disk stalls never reach the loop)."""

    def __init__(self, path: Path, on_error: Callable[[BaseException], object] | None = None) -> None:
        self.path = path
        self.error: BaseException | None = None
        self.dropped = 0
        self._queue: deque[dict[str, Any] | None] = deque()
        self._wake = threading.Event()
        self._on_error = on_error
        self._file = open(path, "ab")  # owned by the writer thread until close()
        self._packer = msgpack.Packer()
        self._thread = threading.Thread(target=self._run, name=f"timeline {path.parent.name}", daemon=True)
        self._thread.start()

    def append(self, event: dict[str, Any]) -> None:
        if self.error is not None:
            return
        if len(self._queue) >= MAX_QUEUE:
            self.dropped += 1
            return
        self._queue.append(event)
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        self._queue.append(None)
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                while self._queue:
                    event = self._queue.popleft()
                    if event is None:
                        return
                    self._file.write(self._packer.pack(event))
                self._file.flush()
        except OSError as exc:
            self.error = exc
            log.error("timeline write failed", exc_info=exc, extra={"path": str(self.path)})
            if self._on_error is not None:
                self._on_error(exc)
        finally:
            try:
                self._file.close()
            except OSError:
                pass


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The stored events; a truncated last record (a crash mid-write) is ignored."""
    unpacker = msgpack.Unpacker(raw=False)
    with open(path, "rb") as f:
        while chunk := f.read(65536):
            unpacker.feed(chunk)
            yield from unpacker


def export_json(
    path: Path, target: Path | None = None, *, ring: KeyRing | None = None, names: Names | None = None
) -> Path:
    """``timeline.msgpack`` → ``timeline.json`` (a list of events), written atomically, sealed items
    as stored. With ``ring``: opened (``opened``) into ``target``, which must then be given and lie
    outside the session directory (an opened copy there would outlive an erasure)."""
    events: list[Any] = list(read(path))
    if ring is not None:
        if target is None or target.resolve().parent == path.resolve().parent:
            raise ValueError("an opened timeline is written outside the session directory")
        events = opened(events, ring, names=names, session_dir=path.parent)
    target = target or path.with_suffix(".json")
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(events, ensure_ascii=False, indent=1))
    tmp.replace(target)
    return target


def opened(
    events: list[Any], ring: KeyRing, *, names: Names | None = None, session_dir: Path | None = None
) -> list[Any]:
    """The events with their sealed items opened (erased ones: placeholders, recording/items.py);
    with ``names`` and ``session_dir`` (its consent ledger says whose participant id is whose), the
    authors' current display names replace the stored ones."""
    opener = Opener(ring)
    out = [opener.event(e) if isinstance(e, dict) else e for e in events]
    if names is None or session_dir is None:
        return out
    policy = SharePolicy.of_session(session_dir, ring=ring)

    def name(pid: Any, stored: Any) -> Any:
        identity = policy.identity(pid) if isinstance(pid, str) else None
        return (names(identity) if identity is not None else None) or stored

    for event in out:
        if not isinstance(event, dict):
            continue
        for field in ("comment", "question"):
            item = event.get(field)
            if isinstance(item, dict) and "author_name" in item:
                event[field] = {**item, "author_name": name(item.get("author_id"), item["author_name"])}
        if event.get("type") == "quiz.leaderboard":
            event["entries"] = [
                {**e, "name": name(e.get("participant_id"), e.get("name"))} if isinstance(e, dict) else e
                for e in event.get("entries") or ()
            ]
    return out
