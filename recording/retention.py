"""Retention: deleting a session's media, timeline and exports once its retention period is over, or
by hand, while keeping the consent ledger and the manifest as the evidence of what was recorded.

A session's retention is the manifest's ``retention_days`` (the stage's, else its club's, as they were
when it was recorded), else the configuration's ``recording_retention_days``; 0 or none keeps it
forever. It expires that many days after it stopped (after it started, when a crash left no stop).

Deleting removes ``tracks/``, ``timeline.*`` and ``exports/``, appends a ``deletion`` record to the
consent ledger (chained like every record, and its head signed with the node's key, so ``python -m
recording verify`` still passes and says when and why the media went), and marks the manifest
``status: "deleted"`` with ``deleted_at`` and ``deletion``. A session still recording is never touched.
Blocking file work: the node runs it off its event loop.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recording.composite.export import ExportBusy, export_lock
from recording.ledger import FILENAME, Ledger, LedgerError
from recording.signing import HEADS_FILENAME, NodeKey, SignedHead, append_head, write_atomic

__all__ = [
    "DAY_S",
    "DELETION",
    "Candidate",
    "NotDeletable",
    "candidates",
    "delete_session",
    "deletion_record",
    "doomed_paths",
    "expires_at",
    "sweep",
]

DAY_S = 86_400.0
DELETION = "deletion"  # the ``type`` of a deletion record in the ledger (consent records have none)


class NotDeletable(Exception):
    """A session that cannot be deleted now; ``code``: ``recording`` (it still is), ``no_key`` (its
    ledger is signed by a key this process does not hold), ``ledger_damaged`` (its chain is broken:
    appending would bury that), ``unreadable`` (no manifest), ``exporting`` (its composite export is
    running: the sweeper tries again at its next pass), ``io_error`` (the disk refused: in ``sweep``,
    for one session while the others go on)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Candidate:
    """A session the sweeper looked at: whether it is due, and what would go."""

    session: Path
    stage_id: str
    session_id: str
    status: str
    retention_days: int | None  # the one that applies (manifest's, else the default); 0/None: forever
    expires_at: float | None
    paths: list[str] = field(default_factory=list)  # relative to the session: what deleting removes

    def due(self, now: float) -> bool:
        return (
            self.status not in ("recording", "deleted")
            and self.expires_at is not None
            and now >= self.expires_at
        )


def read_manifest(session: Path) -> dict[str, Any]:
    try:
        data = json.loads((session / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotDeletable("unreadable", f"{session}: no readable manifest.json ({exc})") from exc
    if not isinstance(data, dict):
        raise NotDeletable("unreadable", f"{session}: manifest.json is not an object")
    return data


def retention_days(manifest: dict[str, Any], default_days: int) -> int | None:
    """The session's own retention (stage's or club's when recorded), else the default; 0: forever."""
    days = manifest.get("retention_days")
    if isinstance(days, int) and not isinstance(days, bool) and days >= 0:
        return days or None
    return default_days or None


def expires_at(manifest: dict[str, Any], default_days: int) -> float | None:
    days = retention_days(manifest, default_days)
    if days is None:
        return None
    since = manifest.get("stopped_at") or manifest.get("started_at")
    if not isinstance(since, int | float):
        return None
    return float(since) + days * DAY_S


def doomed_paths(session: Path) -> list[str]:
    """What deleting removes, relative to the session: media, timeline and exports."""
    found = [p for p in (session / "tracks", session / "exports") if p.exists()]
    found += sorted(session.glob("timeline.*"))
    return [str(p.relative_to(session)) for p in found]


def candidates(root: Path, default_days: int) -> Iterator[Candidate]:
    """Every session under ``root`` (``<root>/<stage>/<session>/manifest.json``) with its expiry."""
    if not root.is_dir():
        return
    for manifest_path in sorted(root.glob("*/*/manifest.json")):
        session = manifest_path.parent
        if session.parent.name.startswith("."):  # .keys and the like: no stage id starts with a dot
            continue
        try:
            manifest = read_manifest(session)
        except NotDeletable:
            continue
        yield Candidate(
            session=session,
            stage_id=str(manifest.get("stage_id") or session.parent.name),
            session_id=str(manifest.get("session_id") or session.name),
            status=str(manifest.get("status")),
            retention_days=retention_days(manifest, default_days),
            expires_at=expires_at(manifest, default_days),
            paths=doomed_paths(session),
        )


def sweep(
    root: Path,
    now: float,
    default_days: int,
    signing_key: NodeKey | None,
    *,
    dry_run: bool = False,
    active: frozenset[str] = frozenset(),
) -> tuple[list[Candidate], list[tuple[Candidate, NotDeletable]]]:
    """Delete every session whose retention is over at ``now`` (none with ``dry_run``): what was (or
    would be) deleted, and what was due but could not be. ``active``: ``stage/session`` ids being
    recorded now, skipped whatever their manifest says."""
    deleted: list[Candidate] = []
    refused: list[tuple[Candidate, NotDeletable]] = []
    for candidate in candidates(root, default_days):
        if not candidate.due(now) or f"{candidate.stage_id}/{candidate.session_id}" in active:
            continue
        if dry_run:
            deleted.append(candidate)
            continue
        try:
            delete_session(
                candidate.session, now=now, reason="retention", by="sweeper", signing_key=signing_key,
                retention_days=candidate.retention_days,
            )  # fmt: skip
        except NotDeletable as exc:
            refused.append((candidate, exc))
            continue
        except OSError as exc:  # one session's disk trouble must not stop the others' deletion
            refused.append((candidate, NotDeletable("io_error", f"{candidate.session}: {exc}")))
            continue
        deleted.append(candidate)
    return deleted, refused


def deletion_record(
    manifest: dict[str, Any], session: Path, now: float, reason: str, by: str, paths: list[str],
    retention_days: int | None,
) -> dict[str, Any]:  # fmt: skip
    """The ledger's record of a deletion (no ``participant_id``: no one's consent decision)."""
    return {
        "type": DELETION,
        "record_id": f"deletion-{now:.3f}",
        "stage_id": str(manifest.get("stage_id") or session.parent.name),
        "session_id": str(manifest.get("session_id") or session.name),
        "at": now,
        "reason": reason,
        "by": by,
        "retention_days": retention_days,
        "deleted": paths,
    }


def delete_session(
    session: Path,
    *,
    now: float,
    reason: str,
    by: str,
    signing_key: NodeKey | None,
    retention_days: int | None = None,
) -> dict[str, Any] | None:
    """Delete the session's media, timeline and exports; record it in the ledger and the manifest.
    Returns the deletion record, or None when the session was deleted already (nothing is done).

    Order: the ledger record and its signed head first, then the files, then the manifest: a crash
    in between leaves a ledger that says what was meant and a manifest a second run completes."""
    manifest = read_manifest(session)
    if manifest.get("status") == "recording":
        raise NotDeletable("recording", f"{session} is still recording")
    if manifest.get("status") == "deleted":
        return None
    key_info = manifest.get("ledger_key")
    key_id = key_info.get("key_id") if isinstance(key_info, dict) else None
    if key_id and (signing_key is None or signing_key.id != key_id):
        raise NotDeletable(
            "no_key",
            f"{session}: its ledger is signed by key {key_id}, which this process does not hold: the "
            "deletion record could not be signed (pass --signing-key)",
        )
    try:
        ledger = Ledger(session / FILENAME)
    except LedgerError as exc:
        raise NotDeletable("ledger_damaged", f"{session}: {exc}") from exc
    try:
        lock = export_lock(session)  # no export may start, nor run, while the files go
    except ExportBusy:
        raise NotDeletable(
            "exporting", f"{session}: its composite export is running; delete it once that ends"
        ) from None
    try:
        return _delete_locked(session, manifest, ledger, key_id, now, reason, by, signing_key, retention_days)
    finally:
        if lock is not None:
            lock.release()


def _delete_locked(
    session: Path,
    manifest: dict[str, Any],
    ledger: Ledger,
    key_id: str | None,
    now: float,
    reason: str,
    by: str,
    signing_key: NodeKey | None,
    retention_days: int | None,
) -> dict[str, Any]:
    paths = doomed_paths(session)
    record = deletion_record(manifest, session, now, reason, by, paths, retention_days)
    ledger.append(record)
    head: SignedHead | None = None
    if key_id and signing_key is not None:
        # ``final``: the session is sealed again, this record included; nothing is to follow.
        head = signing_key.sign(
            SignedHead(
                stage_id=record["stage_id"],
                session_id=record["session_id"],
                count=ledger.count,
                head=ledger.head,
                signed_at=now,
                final=True,
                key_id=signing_key.id,
            )
        )
        append_head(session / HEADS_FILENAME, head)
    for name in paths:
        path = session / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    manifest.update(
        status="deleted",
        previous_status=manifest.get("status"),
        deleted_at=now,
        deletion={"reason": reason, "by": by, "retention_days": retention_days, "deleted": paths},
        ledger_count=ledger.count,
        ledger_head=ledger.head,
    )
    if head is not None:
        manifest["ledger_signature"] = head.to_dict()
    write_atomic(
        session / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8")
    )
    return record
