"""Subject access (issue 15): everything the recordings and the people ledger hold about one person,
as one tar archive written as it is read (never built in memory).

``plan`` reads the recordings directory (blocking: run it in a thread) and lists the members: for each
session where the person took part (their identity in the session's consent ledger, opened with the
node's ring when sealed) their participations and roles, attendance, comments, questions, votes and
quiz answers with scores (recording/report.py's reading, with only them named), their consent records
with the ledger proofs to check them, and their own track files (decrypted with the ring when sealed);
then the people ledger's records about them, and what the caller adds (club memberships, live stages,
the corrected profile). Nobody else's content is copied: another person's comment, vote or name never
enters a member (counts of a poll are the poll's, not a person's, and are left out too).

``Archive`` turns the plan into tar bytes (ustar/pax headers written by ``tarfile.TarInfo``, contents
read chunk by chunk from their files) and ends with ``index.json``: every member with its size, SHA-256
and what it is (docs/recording.md, "Subject access archive"). Iterating it from a thread, chunk by chunk,
is how the server streams it and how the CLI writes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from recording import report
from recording import sealed as sealed_files
from recording.keys import EnvelopeError
from recording.ledger import Entry, read_entries
from recording.sharing import SharePolicy
from recording.signing import HEADS_FILENAME, read_heads
from recording.timeline import read as read_timeline
from recording.vault import ERASED, KeyRing, is_sealed, open_value

__all__ = ["FORMAT", "Archive", "Member", "Omitted", "Unreadable", "open_sealed", "plan"]

FORMAT = "medstage-access/1"
CHUNK = 1 << 20
SEALED_MAGIC = sealed_files.MAGIC
PURPOSES = ("comment", "question", "answer", "vote", "name", "person")


@dataclass
class Member:
    """One file of the archive: its content in ``data``, or read from ``path`` (``sealed``: decrypted
    with the ring as it is read)."""

    name: str
    what: str
    data: bytes | None = None
    path: Path | None = None
    sealed: bool = False
    about: dict[str, Any] = field(default_factory=dict)  # stage_id, session_id, participant_id...


@dataclass(frozen=True)
class Omitted:
    """Something of the person's that exists no longer or cannot be read (an erased key)."""

    what: str
    reason: str
    about: Mapping[str, Any]


# --- reading sealed values ----------------------------------------------------------------------


def open_sealed(value: Any, ring: KeyRing) -> Any:
    """``value`` with every sealed value inside opened (recording/vault.py), whatever its purpose;
    one whose key is gone (erased) or that opens with no purpose becomes ``None``."""
    if is_sealed(value):
        for purpose in PURPOSES:
            try:
                opened = open_value(value, ring, purpose)
            except EnvelopeError:
                continue
            return None if opened is ERASED else open_sealed(opened, ring)
        return None
    if isinstance(value, Mapping):
        return {k: open_sealed(v, ring) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [open_sealed(v, ring) for v in value]
    return value


class Unreadable(Exception):
    """A sealed track of the person's that cannot be given: ``erased`` (its key is gone) or
    ``damaged`` (recording/sealed.py refuses its structure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _open_track(path: Path, ring: KeyRing) -> IO[bytes]:
    """A sealed track file's plaintext (recording/sealed.py). Raises ``Unreadable``."""
    try:
        return sealed_files.open_plaintext(path, ring)
    except sealed_files.SealedKeyMissing:
        raise Unreadable("erased") from None
    except sealed_files.SealedError:
        raise Unreadable("damaged") from None


def _is_sealed_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(SEALED_MAGIC)) == SEALED_MAGIC


# --- the plan --------------------------------------------------------------------------------------


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True, default=str).encode("utf-8")


@dataclass
class _Session:
    root: Path
    manifest: dict[str, Any]
    entries: list[Entry]
    identities: dict[str, str]  # participant id -> identity (opened)
    pids: list[str]  # the person's participant ids


def _session(root: Path, identity: str, ring: KeyRing) -> _Session | None:
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    ledger = root / "consent.jsonl"
    try:
        entries = read_entries(ledger) if ledger.exists() else []
    except (OSError, ValueError):
        entries = []
    identities: dict[str, str] = {}
    for entry in entries:
        record = open_sealed(entry.record, ring)
        pid, who = record.get("participant_id"), record.get("identity")
        if isinstance(pid, str) and isinstance(who, str):
            identities[pid] = who
    for person in manifest.get("participants") or ():
        consent = open_sealed(person.get("consent") or {}, ring) if isinstance(person, dict) else {}
        pid = person.get("participant_id") if isinstance(person, dict) else None
        who = consent.get("identity") if isinstance(consent, Mapping) else None
        if isinstance(pid, str) and isinstance(who, str):
            identities.setdefault(pid, who)
    pids = [pid for pid, who in identities.items() if who == identity]
    if not pids:
        return None
    return _Session(root, manifest, entries, identities, pids)


def _events(root: Path, ring: KeyRing) -> list[dict[str, Any]]:
    if (root / "timeline.msgpack").is_file():
        raw: Iterable[Any] = read_timeline(root / "timeline.msgpack")
    elif (root / "timeline.json").is_file():
        data = json.loads((root / "timeline.json").read_text(encoding="utf-8"))
        raw = data if isinstance(data, list) else []
    else:
        raw = []
    return [open_sealed(e, ring) for e in raw if isinstance(e, dict)]


def _mine(s: _Session, identity: str, events: list[dict[str, Any]], ring: KeyRing) -> dict[str, Any]:
    """The person's items of the session: only theirs (others' are counted nowhere here)."""
    pids = set(s.pids)
    m = s.manifest
    # Their name and consent copies, as the recorder sealed them (the others' stay sealed: no key).
    m = {
        **m,
        "participants": [open_sealed(p, ring) for p in m.get("participants") or () if isinstance(p, dict)],
    }
    participations = [
        {k: p.get(k) for k in ("participant_id", "name", "role")}
        for p in m.get("participants") or ()
        if isinstance(p, dict) and p.get("participant_id") in pids
    ]
    # The report's reading with only this person named: their attendance, answers, scores, questions.
    policy = SharePolicy(
        policy_version=m.get("policy_version"),
        identities={pid: identity for pid in pids},
        scopes={identity: frozenset({"share"})},
    )
    manifest = {
        **m,
        "participants": [p for p in m.get("participants") or () if p.get("participant_id") in pids],
    }
    manifest["present_at_start"] = [
        p for p in m.get("present_at_start") or () if isinstance(p, dict) and p.get("participant_id") in pids
    ]
    mine_events = [_only(e, pids) for e in events]
    built = report.build_parts(manifest, policy, [e for e in mine_events if e is not None])
    attendance = next((p for p in built["attendance"]["people"] if p["identity"] == identity), None)
    answers = []
    for poll in built["polls"]:
        for answer in poll["answers"]:
            if answer["identity"] == identity:
                answers.append(
                    {"poll_id": poll["poll_id"], "question": poll["question"], "options": poll["options"],
                     "quiz": poll["quiz"], "participant_id": answer["participant_id"],
                     "choices": answer["choices"], "correct": answer["correct"]}
                )  # fmt: skip
    score = next((s for s in built["quiz"]["scores"] if s["identity"] == identity), None)
    questions = [
        {k: q[k] for k in ("question_id", "asked_at", "status", "votes", "answered_at", "text")}
        for q in built["questions"]["items"]
        if q["identity"] == identity
    ]
    comments = []
    for event in events:
        item = event.get("comment") if event.get("type") == "comment.posted" else None
        if isinstance(item, Mapping) and item.get("author_id") in pids and not item.get("redacted"):
            comments.append({k: item.get(k) for k in ("id", "at", "author_id", "author_name", "text")})
    about_them, by_them = [], []
    for event in events:  # moderator actions: what was done to them, what they did (no one else named)
        if event.get("type") != "moderation.audit":
            continue
        entry = {k: event.get(k) for k in ("at", "action", "reason", "details")}
        if event.get("target_identity") == identity or event.get("target") in pids:
            about_them.append(entry)
        if event.get("actor_identity") == identity or event.get("actor") in pids:
            by_them.append(entry)
    return {
        "stage_id": m.get("stage_id"),
        "session_id": m.get("session_id"),
        "title": m.get("title"),
        "club_id": m.get("club_id"),
        "started_at": m.get("started_at"),
        "stopped_at": m.get("stopped_at"),
        "status": m.get("status"),
        "participations": participations,
        "attendance": attendance,
        "comments": comments,
        "questions": questions,
        "answers": answers,
        "quiz_score": None if score is None else {"answered": score["answered"], "correct": score["correct"]},
        "moderation": {"about_them": about_them, "by_them": by_them},
    }


def _only(event: dict[str, Any], pids: set[str]) -> dict[str, Any] | None:
    """An event as the report may read it for this person: others' votes and results taken out."""
    type_ = event.get("type")
    if type_ == "poll.voters":
        voters = event.get("voters") or {}
        return {**event, "voters": {p: c for p, c in voters.items() if p in pids}}
    if type_ == "quiz.result" and event.get("participant_id") not in pids:
        return None
    if type_ in ("question.asked", "question.updated"):
        q = event.get("question") or {}
        if q.get("author_id") not in pids:
            return None
    if type_ in ("participant.joined", "participant.left"):
        pid = event.get("participant") or event.get("participant_id")
        if isinstance(pid, dict):
            pid = pid.get("id")
        if pid not in pids:
            return None
    return event


def _consent(s: _Session, identity: str, ring: KeyRing) -> dict[str, Any]:
    """The person's consent records, and what checks them: every entry's chain link (index, prev,
    hash: no record of anyone else), the signed heads, and the key that signed them. ``record`` is as
    stored (what the hash covers: a sealed identity stays sealed), ``opened`` as it reads."""
    pids = set(s.pids)
    records = [
        {
            "index": e.index,
            "prev": e.prev,
            "hash": e.hash,
            "record": e.record,
            "opened": open_sealed(e.record, ring),
        }
        for e in s.entries
        if e.record.get("participant_id") in pids
    ]
    heads, _ = read_heads(s.root / HEADS_FILENAME)
    return {
        "identity": identity,
        "ledger": "consent.jsonl",
        "hash_rule": "sha256(prev + canonical(record) + str(index)), canonical = JSON with sorted keys, "
        "separators (',', ':'), UTF-8 (recording/ledger.py)",
        "records": records,
        "chain": [{"index": e.index, "prev": e.prev, "hash": e.hash} for e in s.entries],
        "signed_heads": [h.to_dict() for _, h in heads if h is not None],
        "ledger_key": s.manifest.get("ledger_key"),
        "manifest_anchor": {"count": s.manifest.get("ledger_count"), "head": s.manifest.get("ledger_head")},
    }


def _tracks(s: _Session, ring: KeyRing, base: str, omitted: list[Omitted]) -> list[Member]:
    members = []
    pids = set(s.pids)
    for track in s.manifest.get("tracks") or ():
        if not isinstance(track, dict) or track.get("participant_id") not in pids:
            continue
        about = {
            "stage_id": s.manifest.get("stage_id"),
            "session_id": s.manifest.get("session_id"),
            "participant_id": track.get("participant_id"),
            "kind": track.get("kind"),
            "source": track.get("source"),
            "first_frame_at": track.get("first_frame_at"),
        }
        relative = str(track.get("file") or "")
        candidates = [s.root / relative, s.root / (relative + ".sealed")] if relative else []
        path = next(
            (p for p in candidates if p.is_file() and p.resolve().is_relative_to(s.root.resolve())), None
        )
        if path is None:
            omitted.append(Omitted("track", "deleted", about))
            continue
        name = f"{base}/tracks/{Path(relative).name.removesuffix('.sealed')}"
        sealed = _is_sealed_file(path)
        if sealed:
            try:
                stream = _open_track(path, ring)
            except Unreadable as exc:
                omitted.append(Omitted("track", exc.reason, about))
                continue
            stream.close()
        members.append(Member(name, "track", path=path, sealed=sealed, about=about))
    return members


def plan(
    identity: str,
    recordings_root: Path,
    ring: KeyRing,
    *,
    people_entries: Iterable[Entry] = (),
    people_heads: Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[list[Member], list[Omitted]]:
    """The archive's members for ``identity`` (module docstring), and what could not be included.
    ``extra``: name -> JSON value the caller adds (``clubs.json``, ``live.json``, ``profile.json``)."""
    members: list[Member] = []
    omitted: list[Omitted] = []
    sessions = []
    if recordings_root.is_dir():
        for stage_dir in sorted(
            p for p in recordings_root.iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            for session_dir in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
                s = _session(session_dir, identity, ring)
                if s is not None:
                    sessions.append(s)
    for s in sessions:
        base = f"sessions/{s.root.parent.name}/{s.root.name}"
        about = {"stage_id": s.manifest.get("stage_id"), "session_id": s.manifest.get("session_id")}
        data = _mine(s, identity, _events(s.root, ring), ring)
        members.append(Member(f"{base}/participation.json", "session", _json(data), about=about))
        members.append(
            Member(f"{base}/consent.json", "consent", _json(_consent(s, identity, ring)), about=about)
        )
        members.extend(_tracks(s, ring, base, omitted))
    mine = [
        {"index": e.index, "prev": e.prev, "hash": e.hash, "record": e.record}
        for e in people_entries
        if identity in (e.record.get("identity"), e.record.get("nominee"), e.record.get("by"))
    ]
    heads: list[dict[str, Any]] = []
    if people_heads is not None:
        heads = [h.to_dict() for _, h in read_heads(people_heads)[0] if h is not None]
    members.append(
        Member("people/ledger.json", "people_ledger", _json({"records": mine, "signed_heads": heads[-1:]}))
    )
    for name, value in (extra or {}).items():
        members.append(Member(name, name.removesuffix(".json"), _json(value)))
    return members, omitted


# --- the tar stream --------------------------------------------------------------------------------


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


class Archive:
    """The tar bytes of a plan, chunk by chunk (blocking reads: iterate it in a thread). Once
    iterated: ``size`` and ``sha256`` of the whole archive, ``index_sha256`` of ``index.json``,
    ``index`` itself and ``counts`` (members by kind)."""

    def __init__(
        self,
        identity: str,
        members: list[Member],
        omitted: list[Omitted],
        ring: KeyRing,
        *,
        export_id: str,
        now: float | None = None,
        node: str | None = None,
        open_track: Callable[[Path, KeyRing], IO[bytes]] = _open_track,
    ) -> None:
        self.identity = identity
        self.members = members
        self.omitted = omitted
        self.ring = ring
        self.export_id = export_id
        self.generated_at = time.time() if now is None else now
        self.node = node
        self._open_track = open_track
        self.scratch: Path | None = None  # a directory the caller made for members (removed after)
        self.size = 0
        self._digest = hashlib.sha256()
        self.index: dict[str, Any] = {}
        self.index_sha256 = ""
        self.counts: dict[str, int] = {}

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _out(self, data: bytes) -> bytes:
        self.size += len(data)
        self._digest.update(data)
        return data

    def _source(self, member: Member) -> IO[bytes]:
        if member.data is not None:
            return io.BytesIO(member.data)
        assert member.path is not None
        if member.sealed:
            try:
                stream = self._open_track(member.path, self.ring)
            except Unreadable as exc:  # its key destroyed since the plan (an erasure meanwhile)
                raise OSError(f"{member.path.name}: {exc.reason}") from None
            return stream
        return open(member.path, "rb")

    def _size(self, member: Member) -> int:
        if member.data is not None:
            return len(member.data)
        assert member.path is not None
        if not member.sealed:
            return member.path.stat().st_size
        total = 0
        with self._source(member) as stream:  # the plaintext's size, before its header goes out
            if stream.seekable():
                return stream.seek(0, io.SEEK_END)
            while chunk := stream.read(CHUNK):
                total += len(chunk)
        return total

    def __iter__(self) -> Iterator[bytes]:
        listed = []
        for member in self.members:
            size = self._size(member)
            digest = hashlib.sha256()
            yield self._out(_header(member.name, size, self.generated_at))
            left = size
            with self._source(member) as stream:
                while left > 0:
                    chunk = stream.read(min(CHUNK, left))
                    if not chunk:
                        raise OSError(f"{member.name}: the file shrank while it was archived")
                    left -= len(chunk)
                    digest.update(chunk)
                    yield self._out(chunk)
            yield self._out(_pad(size))
            self.counts[member.what] = self.counts.get(member.what, 0) + 1
            listed.append(
                {"name": member.name, "what": member.what, "size": size, "sha256": digest.hexdigest(),
                 **({"about": member.about} if member.about else {})}
            )  # fmt: skip
        self.index = {
            "format": FORMAT,
            "export_id": self.export_id,
            "identity": self.identity,
            "generated_at": self.generated_at,
            "node": self.node,
            "members": listed,
            "omitted": [{"what": o.what, "reason": o.reason, "about": dict(o.about)} for o in self.omitted],
        }
        body = _json(self.index)
        self.index_sha256 = hashlib.sha256(body).hexdigest()
        yield self._out(_header("index.json", len(body), self.generated_at))
        yield self._out(body + _pad(len(body)))
        end = b"\0" * (2 * tarfile.BLOCKSIZE)
        yield self._out(end + b"\0" * (-(self.size + len(end)) % tarfile.RECORDSIZE))
