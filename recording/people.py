"""The people ledger (issue 15): person-level decisions, hash-chained and signed like a session's
consent ledger, in ``<data dir>/people/ledger.jsonl``.

It is the same chain (recording/ledger.py: one JSON entry a line, each hash covering its record, its
place and everything before it) with the same signed heads (recording/signing.py), here in
``ledger.heads.jsonl`` and signed as stage ``@people``, session ``ledger`` (no stage id starts with
``@``, so such a head cannot pass for a session's). ``python -m recording verify`` checks a session;
``verify_people`` checks this ledger the same way (recording/evidence.py).

Records hold decisions and identities, never content (an erasure record will name what was destroyed,
not what it held), so the ledger stays verifiable after any erasure. Types:

- ``nomination.granted`` / ``nomination.withdrawn``: ``identity`` lets ``nominee`` exercise their data
  rights (or stops letting them); ``by`` is who asked, ``as`` in what capacity (``person``,
  ``nominee`` withdrawing themselves, ``platform``), ``at`` when.
- ``erasure``: ``identity`` was erased (server/host/erasure.py): ``erasure_id``, ``by``, ``as``,
  ``at``, the key ids destroyed and erased, counts (sessions, files, connections, clubs) and the
  session ledgers' ``erasure`` records written (stage, session, index, hash); never content.
- ``correction``: ``identity``'s profile fields were corrected: ``fields`` maps each field's name to
  the SHA-256 of its new value bound to the person and the field (recording/profiles.py
  ``field_hash``; never the value), with ``by``, ``as``, ``at``.
- ``access``: a subject access archive was handed out: ``export_id``, ``index_sha256`` (of its
  ``index.json``, which lists every member's SHA-256), ``sha256`` and ``size_bytes`` of the archive,
  ``counts`` (members by kind), with ``by``, ``as``, ``at``.

This module is the file side (blocking I/O: callers run it in a thread). Which node appends next, and
in what order entries reach every node's file, is the server's business (server/host/people.py: the
backend's compare-and-append decides, each node mirrors).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recording.evidence import Evidence, TrustedKey, verify_session
from recording.ledger import Entry, Ledger, truncate_incomplete, verify
from recording.signing import NodeKey, SignedHead, append_head, drop_incomplete_tail

__all__ = [
    "FILENAME",
    "HEADS_FILENAME",
    "RECORD_TYPES",
    "SIGNED_AS",
    "WRITABLE_TYPES",
    "Nomination",
    "PeopleLedger",
    "access_record",
    "correction_record",
    "default_people_dir",
    "nomination_record",
    "nominations",
    "verify_people",
]

FILENAME = "ledger.jsonl"
HEADS_FILENAME = "ledger.heads.jsonl"
SIGNED_AS = ("@people", "ledger")  # (stage_id, session_id) of this ledger's signed heads
RECORD_TYPES = frozenset({"nomination.granted", "nomination.withdrawn", "erasure", "correction", "access"})
WRITABLE_TYPES = frozenset(
    {"nomination.granted", "nomination.withdrawn", "erasure", "correction", "access"}
)
CAPACITIES = ("person", "nominee", "platform")


def default_people_dir(recordings_dir: str | os.PathLike[str]) -> Path:
    """``people/`` beside the recordings directory (``data/people`` for ``data/recordings``)."""
    return Path(recordings_dir).parent / "people"


def nomination_record(
    kind: str, identity: str, nominee: str, by: str, capacity: str, at: float
) -> dict[str, Any]:
    """A ``nomination.granted`` or ``nomination.withdrawn`` record."""
    if kind not in ("nomination.granted", "nomination.withdrawn"):
        raise ValueError(f"not a nomination record type: {kind!r}")
    if capacity not in CAPACITIES:
        raise ValueError(f"capacity is one of {', '.join(CAPACITIES)}, not {capacity!r}")
    return {"type": kind, "identity": identity, "nominee": nominee, "by": by, "as": capacity, "at": at}


def correction_record(
    identity: str, fields: Mapping[str, str], by: str, capacity: str, at: float
) -> dict[str, Any]:
    """A ``correction`` record: ``fields`` maps field names to hashes of the new values."""
    if capacity not in CAPACITIES:
        raise ValueError(f"capacity is one of {', '.join(CAPACITIES)}, not {capacity!r}")
    return {"type": "correction", "identity": identity, "fields": dict(sorted(fields.items())), "by": by,
            "as": capacity, "at": at}  # fmt: skip


def access_record(
    identity: str,
    *,
    export_id: str,
    index_sha256: str,
    sha256: str,
    size_bytes: int,
    counts: Mapping[str, int],
    by: str,
    capacity: str,
    at: float,
) -> dict[str, Any]:
    """An ``access`` record: which archive was handed out (digests and counts, never content)."""
    if capacity not in CAPACITIES:
        raise ValueError(f"capacity is one of {', '.join(CAPACITIES)}, not {capacity!r}")
    return {
        "type": "access",
        "identity": identity,
        "export_id": export_id,
        "index_sha256": index_sha256,
        "sha256": sha256,
        "size_bytes": size_bytes,
        "counts": dict(sorted(counts.items())),
        "by": by,
        "as": capacity,
        "at": at,
    }


@dataclass(frozen=True, slots=True)
class Nomination:
    """A nominee in force: granted at ``granted_at`` by ``granted_by``, in ledger entry ``index``."""

    nominee: str
    granted_at: float
    granted_by: str
    index: int


def nominations(entries: Iterable[Entry]) -> dict[str, dict[str, Nomination]]:
    """Every person's nominees in force after ``entries`` (in order): identity -> nominee -> grant."""
    state: dict[str, dict[str, Nomination]] = {}
    for entry in entries:
        record = entry.record
        kind, identity, nominee = record.get("type"), record.get("identity"), record.get("nominee")
        if not isinstance(identity, str) or not isinstance(nominee, str):
            continue
        if kind == "nomination.granted":
            at = record.get("at")
            state.setdefault(identity, {})[nominee] = Nomination(
                nominee, float(at) if isinstance(at, int | float) else 0.0, str(record.get("by")), entry.index
            )
        elif kind == "nomination.withdrawn":
            state.get(identity, {}).pop(nominee, None)
    return state


class PeopleLedger:
    """The ledger file and its signed heads in ``directory`` (0700), continuing what is on disk.

    ``prepare`` chains a record in memory (no I/O), ``write`` appends prepared entries, fsyncs them
    and signs the new head; ``rollback`` forgets a prepared entry that another node's append beat.
    Several processes may share the directory (nodes on one disk): ``acquire`` takes an exclusive
    ``flock``, and ``refresh`` reloads what another process wrote meanwhile.
    """

    def __init__(self, directory: str | os.PathLike[str], key: NodeKey) -> None:
        self.directory = Path(directory)
        self.key = key
        self.path = self.directory / FILENAME
        self.heads_path = self.directory / HEADS_FILENAME
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        # A write cut short by a crash: its entry never counted (the caller got an error; on several
        # nodes the shared log still has it and it is mirrored again). Anything else is damage.
        if self.path.exists() and verify(self.path).problem == "incomplete":
            truncate_incomplete(self.path)
        if self.heads_path.exists():
            drop_incomplete_tail(self.heads_path)
        self.ledger = Ledger(self.path)  # verifies the chain on disk (LedgerError if broken)
        self.entries: list[Entry] = self.ledger.entries() if self.path.exists() else []
        self._size = self.path.stat().st_size if self.path.exists() else 0

    @property
    def count(self) -> int:
        return self.ledger.count

    @property
    def head(self) -> str:
        return self.ledger.head

    def acquire(self) -> int:
        """Exclusive use of the directory's files against other processes (blocking); returns what
        ``release`` takes. Held across the server's awaits, hence not a context manager."""
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)  # releases the lock

    def refresh(self) -> None:
        """Reload the file when another process appended to it (under ``acquire``)."""
        size = self.path.stat().st_size if self.path.exists() else 0
        if size != self._size:
            self._open()

    def prepare(self, record: Mapping[str, Any]) -> Entry:
        kind = record.get("type")
        if kind not in RECORD_TYPES:
            raise ValueError(f"unknown people ledger record type {kind!r}")
        return self.ledger.prepare(record)

    def rollback(self, count: int, head: str) -> None:
        """Forget entries prepared after ``(count, head)`` and not written."""
        if count < self.ledger.written:
            raise ValueError("written entries cannot be rolled back")
        self.ledger.count, self.ledger.head = count, head

    def write(self, entries: list[Entry], now: float) -> SignedHead | None:
        """Append prepared entries in order (each fsynced), then sign and append the new head."""
        if not entries:
            return None
        for entry in entries:
            self.ledger.write(entry)
            self.entries.append(entry)
        self._size = self.path.stat().st_size
        stage_id, session_id = SIGNED_AS
        unsigned = SignedHead(stage_id, session_id, self.count, self.head, now, False, self.key.id)
        head = self.key.sign(unsigned)
        append_head(self.heads_path, head)
        return head


def verify_people(directory: str | os.PathLike[str], key: TrustedKey) -> Evidence:
    """The people ledger's chain against its signed heads, as a session's (recording/evidence.py)."""
    return verify_session(
        Path(directory),
        key,
        ledger_name=FILENAME,
        heads_name=HEADS_FILENAME,
        signed_as=SIGNED_AS,
    )
