"""Erasing a person from the recordings (issue 15): what ``Erasure`` (server/host/erasure.py) runs after
the person's key is destroyed.

For every session under the recordings directory:

- **Sealed track files** (``tracks/*.sealed``, recording/sealed.py's header) whose key id is one of the
  person's are deleted: without the key they are noise, and deleting them leaves not even that.
- **Sessions recorded before encryption** (plaintext timeline and tracks) are rewritten without the
  person, who is found by identity in the consent records (ledger, manifest, timeline) and in the
  moderation audit, then by the manifest's per-session pseudonym (``person``: their reconnects):
  their track files are deleted and their manifest entries dropped; in the timeline their comments,
  questions, quiz results and named votes become tombstones that keep the item's id, time, votes and
  status (``{"redacted": true, "erased": true}``), so counts stay right (poll totals, ballots, question
  votes are anonymous and stay: the proof says so); names and identities elsewhere are blanked.
- **The consent ledger** is rewritten: each of the person's records becomes a ``redacted`` record
  that keeps the decision and its time (``decision``, ``scopes``, ``policy_version``, ``at``) and the
  hash the entry had (``was``), never the identity, name or participant id; the chain is computed
  again and an ``erasure`` record closes it, naming the erasure, the indexes redacted and the
  ledger's previous length and head (``previous_count``, ``previous_head``). Every head is signed
  again with the node's key and the manifest's anchor follows, so ``python -m recording verify``
  passes and still proves the ledger is the one the node wrote; whoever kept a head signed before
  finds it in ``previous_head`` (and every redacted entry's old hash in ``was``).
- **Derived files**: ``exports/`` (the composite export, made of everyone's tracks) is deleted and
  reported (``needs_export``: the node queues it again); the session report is built from the
  timeline on demand (recording/report.py), so it follows the rewrite by itself.

Crash safety: every file is written beside its target and renamed over it; a second run finds what
is left and completes it (the ``erasure`` record names its erasure: it is never appended twice), and
once all is done a second run changes nothing. Blocking I/O: the server calls it in a thread.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recording import sealed
from recording.composite.export import ExportBusy, export_lock
from recording.erasure_timeline import (
    ERASED,
    REDACTED_TYPE,
    drop_sealed,
    is_person,
    participant_ids,
    redacted_consent,
    rewrite_events,
    sealed_in,
    write_timeline,
)
from recording.ledger import FILENAME, GENESIS, Entry, canonical, entry_hash, fsync_dir, read_entries
from recording.signing import HEADS_FILENAME, NodeKey, SignedHead, read_heads, write_atomic
from recording.timeline import read as read_timeline

__all__ = [
    "ERASED",
    "ErasureResult",
    "SessionErasure",
    "erase_person_from_recordings",
    "erase_person_from_session",
    "sealed_key_id",
]

ERASURE_TYPE = "erasure"
log = logging.getLogger(__name__)
LOCK_NAME = ".erasure.lock"  # in the recordings directory: no stage id starts with a dot


def sealed_key_id(path: Path) -> str | None:
    """The key id in a sealed file's header, None when it is not sealed (or unreadable)."""
    try:
        return sealed.key_id_of(path)
    except OSError:
        return None


@dataclass
class SessionErasure:
    """What erasing the person did to one session (paths relative to the session directory)."""

    stage_id: str
    session_id: str
    participant_ids: list[str] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)
    files_rewritten: list[str] = field(default_factory=list)
    timeline_items: int = 0  # events changed
    ledger_redacted: list[int] = field(default_factory=list)  # ledger indexes made ``redacted``
    ledger_record: dict[str, Any] | None = None  # the ``erasure`` record: index, hash
    exports_deleted: bool = False
    needs_export: bool = False  # a composite export existed: the node makes it again
    remains: dict[str, int] = field(default_factory=dict)  # anonymous counts kept
    skipped: str | None = None  # why nothing could be done (``recording``, ``no_key``, ``busy``)

    @property
    def changed(self) -> bool:
        return bool(self.files_deleted or self.files_rewritten or self.ledger_redacted or self.ledger_record)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ErasureResult:
    """Every session touched (or that could not be, and why), and the keys whose files went."""

    identity: str
    erasure_id: str
    key_ids: list[str]
    sessions: list[SessionErasure] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.sessions)

    def remains(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for session in self.sessions:
            for name, count in session.remains.items():
                total[name] = total.get(name, 0) + count
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "erasure_id": self.erasure_id,
            "key_ids": list(self.key_ids),
            "sessions": [s.to_dict() for s in self.sessions if s.changed or s.skipped],
            "remains": self.remains(),
        }


def sessions_under(recordings_dir: Path) -> Iterator[Path]:
    """Every ``<stage>/<session>`` directory with a manifest (dot-directories are not stages)."""
    if not recordings_dir.is_dir():
        return
    for stage in sorted(recordings_dir.iterdir()):
        if stage.name.startswith(".") or not stage.is_dir():
            continue
        for session in sorted(stage.iterdir()):
            if session.is_dir() and (session / "manifest.json").is_file():
                yield session


def erase_person_from_recordings(
    recordings_dir: str | os.PathLike[str],
    identity: str,
    key_ids: Collection[str],
    *,
    erasure_id: str,
    now: float,
    signing_key: NodeKey | None,
    skip: Collection[tuple[str, str]] = (),
    only: Collection[tuple[str, str]] | None = None,
) -> ErasureResult:
    """Erase ``identity`` (and files sealed with ``key_ids``) from every session under the directory.
    ``skip``: sessions recording right now (stage, session): left for a run after their stop;
    ``only``: just these sessions. Processes sharing the directory (nodes on one disk) take turns
    (``.erasure.lock`` in it)."""
    result = ErasureResult(identity, erasure_id, sorted(key_ids))
    root = Path(recordings_dir)
    if not root.is_dir():
        return result
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _erase_all(root, result, identity, key_ids, erasure_id, now, signing_key, skip, only)
    finally:
        os.close(fd)
    return result


def _erase_all(
    root: Path,
    result: ErasureResult,
    identity: str,
    key_ids: Collection[str],
    erasure_id: str,
    now: float,
    signing_key: NodeKey | None,
    skip: Collection[tuple[str, str]],
    only: Collection[tuple[str, str]] | None,
) -> None:
    for session in sessions_under(root):
        if only is not None and (session.parent.name, session.name) not in only:
            continue
        if (session.parent.name, session.name) in skip:
            result.sessions.append(SessionErasure(session.parent.name, session.name, skipped="recording"))
            continue
        try:
            done = erase_person_from_session(
                session, identity, key_ids, erasure_id=erasure_id, now=now, signing_key=signing_key
            )
        except (ValueError, KeyError, TypeError) as exc:  # a damaged ledger, manifest or timeline
            log.error("erasure: session not readable", extra={"session": str(session), "error": repr(exc)})
            done = SessionErasure(session.parent.name, session.name, skipped="damaged")
        except OSError as exc:  # one session's disk trouble must not stop the others' erasure
            log.error("erasure: session not writable", extra={"session": str(session), "error": repr(exc)})
            done = SessionErasure(session.parent.name, session.name, skipped="io_error")
        if done.changed or done.skipped:
            result.sessions.append(done)


def erase_person_from_session(
    session: Path,
    identity: str,
    key_ids: Collection[str],
    *,
    erasure_id: str,
    now: float,
    signing_key: NodeKey | None,
) -> SessionErasure:
    """Erase the person from one session (see the module docstring); idempotent."""
    manifest = _read_json(session / "manifest.json")
    done = SessionErasure(
        str(manifest.get("stage_id") or session.parent.name),
        str(manifest.get("session_id") or session.name),
    )
    if manifest.get("status") == "recording" and not (session / "timeline.json").exists():
        # A recorder (here, another node, a recorder process) may be writing it, or it crashed:
        # ``python -m recording repair`` finalizes it, then erasing again reaches it.
        done.skipped = "unfinished"
        return done
    key_info = manifest.get("ledger_key")
    signed_by = key_info.get("key_id") if isinstance(key_info, dict) else None
    ledger_path = session / FILENAME
    entries = read_entries(ledger_path) if ledger_path.exists() else []
    timeline_path = session / "timeline.msgpack"
    events = list(read_timeline(timeline_path)) if timeline_path.exists() else []
    keys = frozenset(key_ids)
    pids = participant_ids(identity, keys, manifest, entries, events)
    done.participant_ids = sorted(pids)
    doomed = _doomed_tracks(session, pids, key_ids, manifest)
    ours = [e.index for e in entries if _about(e.record, identity, pids, keys)]
    erasure_logged = any(
        e.record.get("type") == ERASURE_TYPE and e.record.get("erasure_id") == erasure_id for e in entries
    )
    if not pids and not doomed and not erasure_logged:
        return done  # nothing of theirs here (or erased already)
    if signed_by and (signing_key is None or signing_key.id != signed_by):
        done.skipped = "no_key"  # its ledger could not be signed again: left as it is, reported
        return done
    try:
        lock = export_lock(session)
    except ExportBusy:
        done.skipped = "busy"
        return done
    try:
        _erase_locked(session, manifest, entries, events, identity, pids, doomed, ours, done,
                      keys=keys, erasure_id=erasure_id, now=now,
                      signing_key=signing_key if signed_by else None,
                      erasure_logged=erasure_logged)  # fmt: skip
    finally:
        if lock is not None:
            lock.release()
    return done


def _erase_locked(
    session: Path,
    manifest: dict[str, Any],
    entries: list[Entry],
    events: list[dict[str, Any]],
    identity: str,
    pids: set[str],
    doomed: list[Path],
    ours: list[int],
    done: SessionErasure,
    *,
    keys: frozenset[str],
    erasure_id: str,
    now: float,
    signing_key: NodeKey | None,
    erasure_logged: bool,
) -> None:
    # 1. The person's media.
    for path in doomed:
        path.unlink(missing_ok=True)
        done.files_deleted.append(os.path.relpath(path, session))
    if doomed:
        fsync_dir(session / "tracks")
    # 2. Derived files made of everyone's media: gone, made again by the node.
    exports = session / "exports"
    if (pids or doomed) and exports.is_dir() and any(exports.iterdir()):
        for child in exports.iterdir():
            if child.name == "composite.lock":
                continue  # held by us right now; an empty exports/ means "never exported"
            shutil.rmtree(child) if child.is_dir() else child.unlink(missing_ok=True)
        done.exports_deleted = done.needs_export = True
        done.files_deleted.append("exports/")
    # 3. The timeline, then its JSON export.
    tag = (
        "erased-"
        + hashlib.sha256(f"{erasure_id}\n{done.stage_id}/{done.session_id}".encode()).hexdigest()[:12]
    )
    rewritten, changed, remains = rewrite_events(events, identity, pids, keys)
    done.remains = remains
    if changed:
        done.timeline_items = changed
        write_timeline(session / "timeline.msgpack", rewritten)
        done.files_rewritten.append("timeline.msgpack")
    if (session / "timeline.json").exists() and (changed or _stale(session / "timeline.json", rewritten)):
        write_atomic(
            session / "timeline.json",
            json.dumps(rewritten, ensure_ascii=False, indent=1).encode("utf-8"),
        )
        done.files_rewritten.append("timeline.json")
    # 4. The consent ledger and its signed heads.
    if ours or not erasure_logged:
        new_entries = _rewrite_ledger(entries, identity, pids, ours, erasure_id, now, done, erasure_logged)
        _write_ledger(session, new_entries, manifest, done, signing_key, now)
        done.ledger_redacted = ours
        done.files_rewritten += [FILENAME] + ([HEADS_FILENAME] if signing_key is not None else [])
    elif signing_key is not None and _heads_behind(session, entries):
        _write_ledger(session, entries, manifest, done, signing_key, now)  # a crash between the two
    # 5. The manifest last: it names what remains.
    new_manifest = _rewrite_manifest(manifest, pids, tag, done, erasure_id)
    if sealed_in(new_manifest, keys):
        new_manifest = drop_sealed(new_manifest, keys)
    if new_manifest != manifest:
        write_atomic(
            session / "manifest.json",
            json.dumps(new_manifest, indent=1, ensure_ascii=False).encode("utf-8"),
        )
        done.files_rewritten.append("manifest.json")


# --- who is the person here -------------------------------------------------------------------------


def _about(record: dict[str, Any], identity: str, pids: set[str], keys: frozenset[str]) -> bool:
    return record.get("type") not in (REDACTED_TYPE, ERASURE_TYPE) and (
        is_person(record.get("identity"), identity, keys)
        or record.get("participant_id") in pids
        or sealed_in(record, keys)
    )


def _doomed_tracks(
    session: Path, pids: set[str], key_ids: Collection[str], manifest: dict[str, Any]
) -> list[Path]:
    tracks = session / "tracks"
    if not tracks.is_dir():
        return []
    named = {
        str(t.get("file"))
        for t in manifest.get("tracks") or []
        if isinstance(t, dict) and t.get("participant_id") in pids
    }
    doomed = []
    for path in sorted(tracks.iterdir()):
        if not path.is_file():
            continue
        relative = os.path.relpath(path, session)
        key_id = sealed_key_id(path)
        if key_id is not None:
            if key_id in key_ids:
                doomed.append(path)
        elif relative in named or any(path.name.startswith(f"{pid}-") for pid in pids):
            doomed.append(path)
    return doomed


# --- the timeline -----------------------------------------------------------------------------------


# --- the consent ledger -----------------------------------------------------------------------------


def _rewrite_ledger(
    entries: list[Entry],
    identity: str,
    pids: set[str],
    ours: list[int],
    erasure_id: str,
    now: float,
    done: SessionErasure,
    erasure_logged: bool,
) -> list[Entry]:
    records = [redacted_consent(e.record, e.hash) if e.index in ours else e.record for e in entries]
    if not erasure_logged:
        records.append(
            {
                "type": ERASURE_TYPE,
                "record_id": f"erasure-{erasure_id}",
                "erasure_id": erasure_id,
                "stage_id": done.stage_id,
                "session_id": done.session_id,
                "at": now,
                "redacted": list(ours),
                "previous_count": len(entries),
                "previous_head": entries[-1].hash if entries else GENESIS,
                "files_deleted": len(done.files_deleted),
                "timeline_items": done.timeline_items,
            }
        )
    chained: list[Entry] = []
    head = GENESIS
    for index, record in enumerate(records):
        data: dict[str, Any] = json.loads(canonical(record))
        entry = Entry(index, head, data, entry_hash(head, data, index))
        chained.append(entry)
        head = entry.hash
    if not erasure_logged:
        last = chained[-1]
        done.ledger_record = {"index": last.index, "hash": last.hash}
    return chained


def _heads_behind(session: Path, entries: list[Entry]) -> bool:
    """Whether the signed heads no longer match the ledger (a crash between their two renames)."""
    heads, _ = read_heads(session / HEADS_FILENAME)
    last = heads[-1][1] if heads else None
    head = entries[-1].hash if entries else GENESIS
    return last is None or last.count != len(entries) or last.head != head


def _write_ledger(
    session: Path,
    entries: list[Entry],
    manifest: dict[str, Any],
    done: SessionErasure,
    signing_key: NodeKey | None,
    now: float,
) -> None:
    ledger_tmp = session / (FILENAME + ".erasing")
    ledger_tmp.write_text("".join(e.line() + "\n" for e in entries), encoding="utf-8")
    heads_lines = ""
    if signing_key is not None:
        old, _ = read_heads(session / HEADS_FILENAME)
        final = any(h is not None and h.final for _, h in old) or manifest.get("status") != "recording"
        for count in range(0 if not entries else 1, len(entries) + 1):
            head = signing_key.sign(
                SignedHead(done.stage_id, done.session_id, count,
                           entries[count - 1].hash if count else GENESIS, now,
                           final and count == len(entries), signing_key.id)
            )  # fmt: skip
            heads_lines += head.line() + "\n"
            manifest["ledger_signature"] = head.to_dict()
    with open(ledger_tmp, "rb+") as f:
        os.fsync(f.fileno())
    if signing_key is not None:
        write_atomic(session / (HEADS_FILENAME + ".erasing"), heads_lines.encode("utf-8"))
    os.replace(ledger_tmp, session / FILENAME)
    if signing_key is not None:
        os.replace(session / (HEADS_FILENAME + ".erasing"), session / HEADS_FILENAME)
    fsync_dir(session)
    manifest["ledger_count"] = len(entries)
    manifest["ledger_head"] = entries[-1].hash if entries else GENESIS


# --- the manifest -----------------------------------------------------------------------------------


def _rewrite_manifest(
    manifest: dict[str, Any], pids: set[str], tag: str, done: SessionErasure, erasure_id: str
) -> dict[str, Any]:
    new = dict(manifest)
    participants = []
    for person in manifest.get("participants") or []:
        if isinstance(person, dict) and person.get("participant_id") in pids:
            person = {**person, "name": "", "person": tag, "consent": None, "erased": True}
        participants.append(person)
    new["participants"] = participants
    pseudonyms = {
        p.get("person")
        for p in manifest.get("participants") or []
        if isinstance(p, dict) and p.get("participant_id") in pids
    }
    new["present_at_start"] = [
        {**p, "person": tag}
        if isinstance(p, dict) and (p.get("participant_id") in pids or p.get("person") in pseudonyms)
        else p
        for p in manifest.get("present_at_start") or []
    ]
    deleted = set(done.files_deleted)
    kept_tracks = []
    for track in manifest.get("tracks") or []:
        if isinstance(track, dict) and (
            track.get("participant_id") in pids or str(track.get("file")) in deleted
        ):
            continue
        kept_tracks.append(track)
    new["tracks"] = kept_tracks
    if done.changed:
        erasures = list(manifest.get("erasures") or [])
        if not any(e.get("erasure_id") == erasure_id for e in erasures if isinstance(e, dict)):
            erasures.append(
                {
                    "erasure_id": erasure_id,
                    "tracks_deleted": len([f for f in done.files_deleted if f.startswith("tracks/")]),
                    "timeline_items": done.timeline_items,
                    "ledger_redacted": len(done.ledger_redacted),
                    "exports_deleted": done.exports_deleted,
                }
            )
        new["erasures"] = erasures
    return new


def _stale(export: Path, events: list[dict[str, Any]]) -> bool:
    """Whether the JSON export differs from the timeline (a crash between their two rewrites)."""
    try:
        return bool(json.loads(export.read_text(encoding="utf-8")) != events)
    except (OSError, ValueError):
        return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
