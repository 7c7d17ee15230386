"""The consent ledger: an append-only, hash-chained JSON Lines file stored with the recording.

Line ``n`` (0, 1, 2, ...) of a session's ``consent.jsonl`` is one entry::

    {"index": n, "prev": "<hash of entry n-1, or 64 zeros>", "record": {...}, "hash": "<hex SHA-256>"}

``hash`` is the SHA-256 of the UTF-8 bytes of ``prev + canonical(record) + str(index)``, where
``canonical`` is ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``. So an
entry's hash covers its record, its place and everything before it: changing a byte of a record, or
removing, inserting or reordering entries, breaks the chain at that entry, and :func:`verify` names it.

What a chain alone cannot show is the loss of the *last* entries at a line boundary, or entries
appended with valid hashes at the end: note ``Ledger.count`` and ``Ledger.head`` elsewhere after
appending (the session manifest's ``ledger_count`` and ``ledger_head``) and pass them as ``anchor``.

Every append is flushed and fsynced before it returns: a consent decision survives a crash. A crash in
the middle of a write leaves an incomplete last line, which :func:`verify` reports as such and
:func:`truncate_incomplete` removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from rooms.consent import ConsentRecord

__all__ = [
    "FILENAME",
    "GENESIS",
    "Entry",
    "Ledger",
    "LedgerError",
    "VerifyResult",
    "canonical",
    "entry_hash",
    "read_entries",
    "truncate_incomplete",
    "verify",
]

FILENAME = "consent.jsonl"
GENESIS = "0" * 64  # the ``prev`` of entry 0


def canonical(obj: Any) -> str:
    """The one JSON text of ``obj`` that is hashed: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev: str, record: Mapping[str, Any], index: int) -> str:
    return hashlib.sha256((prev + canonical(record) + str(index)).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the ledger."""

    index: int
    prev: str
    record: dict[str, Any]
    hash: str

    def line(self) -> str:
        """The line as written (without its newline): the fields in their documented order."""
        return (
            f'{{"index":{self.index},"prev":{json.dumps(self.prev)},'
            f'"record":{canonical(self.record)},"hash":{json.dumps(self.hash)}}}'
        )

    @property
    def intact(self) -> bool:
        """Whether the stored hash matches the entry's content."""
        return entry_hash(self.prev, self.record, self.index) == self.hash


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What :func:`verify` found: OK with the number of records, or the first problem.

    ``problem`` is ``altered`` (the entry's hash does not match its content, or the next entry does not
    link to it), ``removed`` (the index sequence skips), ``inserted`` (an entry that does not follow,
    while the chain goes on without it) or ``incomplete`` (a last line cut short by a crash).
    """

    count: int  # entries of the intact chain before the problem (all of them when OK)
    head: str  # hash of the last entry of that chain (GENESIS when there is none)
    problem: str | None = None
    index: int | None = None  # the record the problem is about (for removed: the first one missing)
    missing: int = 0  # removed: how many
    line: int | None = None  # 1-based line of the file where it shows
    participant_id: str | None = None
    at: float | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def message(self) -> str:
        if self.problem is None:
            return f"ok: {self.count} record{'' if self.count == 1 else 's'}"
        if self.problem == "incomplete":
            return f"incomplete last entry (line {self.line}, after {self.count} intact records)"
        if self.problem == "removed" and self.missing > 1:
            assert self.index is not None
            return f"records {self.index} to {self.index + self.missing - 1} were removed"
        who = []
        if self.participant_id is not None:
            who.append(f"participant {self.participant_id}")
        if self.at is not None:
            who.append(f"at {_iso(self.at)}")
        detail = f" ({' '.join(who)})" if who else ""
        return f"record {self.index} was {self.problem}{detail}"


class LedgerError(Exception):
    """The ledger on disk is not an intact chain (``result`` says how); nothing was written to it."""

    def __init__(self, path: Path, result: VerifyResult) -> None:
        super().__init__(f"{path}: {result.message()}")
        self.path = path
        self.result = result


class Ledger:
    """Appends consent records to one session's ledger, continuing the chain already on disk.

    Opening a ledger that is not intact raises ``LedgerError``: appending after a broken or
    half-written entry would bury the damage. One process writes a ledger at a time.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        result = verify(self.path) if self.path.exists() else VerifyResult(count=0, head=GENESIS)
        if not result.ok:
            raise LedgerError(self.path, result)
        self.count, self.head = result.count, result.head
        self.written = result.count  # entries on disk (``count`` may be ahead: prepared, not yet written)
        self.failed: OSError | None = None

    def append(self, record: ConsentRecord | Mapping[str, Any]) -> Entry:
        """Write one entry and fsync it before returning (raises ``OSError`` when the disk refuses)."""
        entry = self.prepare(record)
        self.write(entry)
        return entry

    def prepare(self, record: ConsentRecord | Mapping[str, Any]) -> Entry:
        """The next entry, chained in memory (``count`` and ``head`` move on); no I/O, so the event loop
        can call it and leave :meth:`write` to a thread, in the same order (recording/session.py)."""
        builtins = msgspec.to_builtins(record) if isinstance(record, ConsentRecord) else dict(record)
        data: dict[str, Any] = json.loads(canonical(builtins))  # exactly what a reader gets back
        entry = Entry(self.count, self.head, data, entry_hash(self.head, data, self.count))
        self.count, self.head = self.count + 1, entry.hash
        return entry

    def write(self, entry: Entry) -> None:
        """Append a prepared entry and fsync it (blocking). Entries must come in order: after a failed
        write the ledger refuses the rest (raises the first error again), so no gap is ever buried."""
        if self.failed is not None:
            raise self.failed
        if entry.index != self.written:
            raise ValueError(
                f"{self.path}: entry {entry.index} written out of order (next is {self.written})"
            )
        created = not self.path.exists()
        try:
            with open(self.path, "a", encoding="utf-8", newline="\n") as f:
                f.write(entry.line() + "\n")
                f.flush()
                os.fsync(f.fileno())
            if created:  # the new directory entry must survive a crash too
                fsync_dir(self.path.parent)
        except OSError as exc:
            self.failed = exc
            raise
        self.written += 1

    def entries(self) -> list[Entry]:
        return read_entries(self.path)


def read_entries(path: str | os.PathLike[str]) -> list[Entry]:
    """Every complete entry on disk, in order, as written (no check of the chain: see ``verify``)."""
    lines, _ = _split(Path(path).read_bytes())
    entries = []
    for number, raw in enumerate(lines, 1):
        entry = _parse(raw)
        if entry is None:
            raise ValueError(f"{path}: line {number} is not a ledger entry")
        entries.append(entry)
    return entries


# --- verification ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    raw: bytes
    entry: Entry | None  # None: not an entry at all (unparseable, or fields missing)

    @property
    def good(self) -> bool:
        return self.entry is not None and self.entry.intact

    def follows(self, index: int, prev: str) -> bool:
        return self.entry is not None and self.good and self.entry.index == index and self.entry.prev == prev


def verify(path: str | os.PathLike[str], *, anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Check the chain and name the first record that was altered, removed or inserted.

    ``anchor``: ``(count, head)`` of this ledger as noted elsewhere (the manifest) after an append;
    with it, the loss of the last records, or a chain rewritten up to its end, shows too. Entries
    after the anchor are fine (it may be older than the last append). Raises ``OSError`` when the file
    cannot be read.
    """
    raw_lines, tail = _split(Path(path).read_bytes())
    lines = [_Line(n, raw, _parse(raw)) for n, raw in enumerate(raw_lines, 1)]
    chain: list[str] = []  # hashes of the entries accepted so far
    for pos, line in enumerate(lines):
        if line.entry is not None and line.follows(len(chain), chain[-1] if chain else GENESIS):
            chain.append(line.entry.hash)
            continue
        problem, index, culprit, missing = _diagnose(lines, pos, chain)
        good = chain[:index]  # an entry accepted before may turn out to be the culprit
        participant_id, at = _who(culprit) if problem != "removed" else (None, None)
        return VerifyResult(
            count=len(good),
            head=good[-1] if good else GENESIS,
            problem=problem,
            index=index,
            missing=missing,
            line=culprit.number,
            participant_id=participant_id,
            at=at,
        )
    head = chain[-1] if chain else GENESIS
    if anchor is not None and anchor[0] > 0:
        count, anchored = anchor
        if count > len(chain):  # the last records are gone
            return VerifyResult(
                count=len(chain),
                head=head,
                problem="removed",
                index=len(chain),
                missing=count - len(chain),
                line=len(lines) + 1,
            )
        if chain[count - 1] != anchored:  # rewritten, hashes and all, up to there at least
            culprit = lines[count - 1]
            participant_id, at = _who(culprit)
            good = chain[: count - 1]
            return VerifyResult(
                count=len(good),
                head=good[-1] if good else GENESIS,
                problem="altered",
                index=count - 1,
                line=culprit.number,
                participant_id=participant_id,
                at=at,
            )
    if tail:
        return VerifyResult(count=len(chain), head=head, problem="incomplete", line=len(lines) + 1)
    return VerifyResult(count=len(chain), head=head)


def _diagnose(lines: list[_Line], pos: int, chain: list[str]) -> tuple[str, int, _Line, int]:
    """Why ``lines[pos]`` does not continue ``chain``: (problem, record index, the line to name, missing)."""
    line, index, prev = lines[pos], len(chain), chain[-1] if chain else GENESIS
    after = lines[pos + 1] if pos + 1 < len(lines) else None
    if after is not None and after.follows(index, prev):
        return "inserted", index, line, 0  # the chain goes on as if this line were not there
    entry = line.entry
    if entry is not None and line.good:
        if chain and entry.hash == chain[-1]:
            return "inserted", index, line, 0  # a copy of the entry just before
        before = chain[-2] if len(chain) > 1 else GENESIS
        if chain and entry.index == index - 1 and entry.prev == before:
            return "inserted", index - 1, lines[pos - 1], 0  # the entry before was the extra one
        if entry.index < index:
            return "inserted", index, line, 0  # a copy of an earlier entry
        if entry.index > index:
            return "removed", index, line, entry.index - index
        if chain:  # intact and in its place, but not linked to the entry before: that one was rewritten
            return "altered", index - 1, lines[pos - 1], 0
    if entry is None and not line.raw.strip():
        return "inserted", index, line, 0  # a blank line
    return "altered", index, line, 0  # its content, hash, link or index does not match


def truncate_incomplete(path: str | os.PathLike[str]) -> int:
    """Remove an incomplete last line (a write cut short by a crash); returns the bytes removed.

    A last line that is a whole, intact entry continuing the chain, and lacks only its newline, is
    completed instead (nothing is removed: that record was written). Complete lines are never touched.
    """
    path = Path(path)
    data = path.read_bytes()
    _, tail = _split(data)
    if not tail:
        return 0
    result, last = verify(path), _parse(tail)
    completes = (
        result.problem == "incomplete"
        and last is not None
        and last.intact
        and last.index == result.count
        and last.prev == result.head
    )
    with open(path, "r+b") as f:
        if completes:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            f.truncate(len(data) - len(tail))
        f.flush()
        os.fsync(f.fileno())
    return 0 if completes else len(tail)


# --- helpers ---------------------------------------------------------------------------------------

_FIELDS = {"index": int, "prev": str, "record": dict, "hash": str}
_PARTICIPANT = re.compile(rb'"participant_id":"((?:[^"\\]|\\.)*)"')
_AT = re.compile(rb'"at":(-?[0-9][0-9.eE+-]*)')


def _split(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines, and what follows the last newline (empty when the file ends with one)."""
    *lines, tail = data.split(b"\n")
    return lines, tail


def _parse(raw: bytes) -> Entry | None:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict) or any(type(obj.get(k)) is not t for k, t in _FIELDS.items()):
        return None
    return Entry(obj["index"], obj["prev"], obj["record"], obj["hash"])


def _who(line: _Line) -> tuple[str | None, float | None]:
    """The participant and time of the record on ``line``, when they can be read (even from a damaged
    line)."""
    if line.entry is not None:
        record = line.entry.record
        participant, at = record.get("participant_id"), record.get("at")
        return (
            participant if isinstance(participant, str) else None,
            float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None,
        )
    participant_match, at_match = _PARTICIPANT.search(line.raw), _AT.search(line.raw)
    participant_id = None
    if participant_match:
        participant_id = participant_match[1].decode("utf-8", "replace")
    try:
        at_value = float(at_match[1]) if at_match else None
    except ValueError:
        at_value = None
    return participant_id, at_value


def _iso(at: float) -> str:
    try:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(at)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (POSIX: the entry is the directory's)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
