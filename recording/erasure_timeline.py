"""Finding a person in a recorded session and taking them out of its timeline (recording/erasure.py
runs it): by identity, by participant id, and by the key id of values sealed with their key
(recording/vault.py). Pure functions on decoded events, but ``write_timeline`` (write, fsync, rename)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack

from recording.ledger import Entry, fsync_dir
from recording.vault import sealed_key_id as sealed_value_key_id

ERASED = {"redacted": True, "erased": True}
REDACTED_TYPE = "redacted"  # a consent ledger record made anonymous by an erasure


def sealed_in(obj: Any, keys: frozenset[str]) -> bool:
    """Whether ``obj`` holds a value sealed (recording/vault.py) with one of ``keys``."""
    if not keys:
        return False
    if isinstance(obj, dict):
        if sealed_value_key_id(obj) in keys:
            return True
        return any(sealed_in(v, keys) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(sealed_in(v, keys) for v in obj)
    return False


def drop_sealed(obj: Any, keys: frozenset[str]) -> Any:
    """``obj`` with every value sealed with one of ``keys`` replaced by null (noise already: gone)."""
    if isinstance(obj, dict):
        if sealed_value_key_id(obj) in keys:
            return None
        return {k: drop_sealed(v, keys) for k, v in obj.items()}
    if isinstance(obj, list):
        return [drop_sealed(v, keys) for v in obj]
    return obj


def is_person(value: Any, identity: str, keys: frozenset[str]) -> bool:
    """The person's identity, plain or sealed with their key (a consent record's ``person``)."""
    return value == identity or (isinstance(value, dict) and sealed_value_key_id(value) in keys)


def participant_ids(
    identity: str,
    keys: frozenset[str],
    manifest: dict[str, Any],
    entries: list[Entry],
    events: list[dict[str, Any]],
) -> set[str]:
    pids: set[str] = set()
    for entry in entries:
        record = entry.record
        if record.get("type") == REDACTED_TYPE or not isinstance(record.get("participant_id"), str):
            continue
        if is_person(record.get("identity"), identity, keys) or sealed_in(record, keys):
            pids.add(record["participant_id"])
    participants = [p for p in manifest.get("participants") or [] if isinstance(p, dict)]
    for person in participants:
        consent = person.get("consent")
        mine = isinstance(consent, dict) and is_person(consent.get("identity"), identity, keys)
        if mine or sealed_in(person, keys):
            pids.add(str(person.get("participant_id")))
    for event in events:
        kind = event.get("type")
        if kind == "consent.recorded":
            record = event.get("record") or {}
            mine = is_person(record.get("identity"), identity, keys) or sealed_in(record, keys)
            if mine and isinstance(record.get("participant_id"), str):
                pids.add(record["participant_id"])
        elif kind in ("comment.posted", "question.asked", "question.updated"):
            item = event.get("comment") or event.get("question")
            if isinstance(item, dict) and isinstance(item.get("author_id"), str) and sealed_in(item, keys):
                pids.add(item["author_id"])
        elif kind == "moderation.audit":
            if event.get("actor_identity") == identity and isinstance(event.get("actor"), str):
                pids.add(event["actor"])
            if event.get("target_identity") == identity and isinstance(event.get("target"), str):
                pids.add(event["target"])
    # The same person's other connections (reconnects): the manifest's per-session pseudonym.
    pseudonyms = {p.get("person") for p in participants if p.get("participant_id") in pids}
    pseudonyms.discard(None)
    for person in participants:
        if person.get("person") in pseudonyms and not str(person.get("person")).startswith("erased-"):
            pids.add(str(person.get("participant_id")))
    return pids


def rewrite_events(
    events: list[dict[str, Any]], identity: str, pids: set[str], keys: frozenset[str]
) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    """The events without the person, how many changed, and what of theirs remains anonymously."""
    out, changed = [], 0
    remains = {"comments": 0, "questions": 0, "poll_ballots": 0, "quiz_answers": 0}
    for event in events:
        new = _rewrite_event(event, identity, pids, remains)
        if sealed_in(new, keys):
            new = drop_sealed(new, keys)
        changed += new != event
        out.append(new)
    return out, changed, {k: v for k, v in remains.items() if v}


def _tombstone(item: Any) -> dict[str, Any]:
    kept = {k: item[k] for k in ("id", "at", "votes", "status") if isinstance(item, dict) and k in item}
    return {**kept, **ERASED}


def _rewrite_event(
    event: dict[str, Any], identity: str, pids: set[str], remains: dict[str, int]
) -> dict[str, Any]:
    kind = event.get("type")
    for field_, counted in (("comment", "comments"), ("question", "questions")):
        item = event.get(field_)
        if isinstance(item, dict) and item.get("author_id") in pids:
            if kind in ("comment.posted", "question.asked"):
                remains[counted] += 1
            return {**event, field_: _tombstone(item)}
    if kind == "poll.voters":
        voters = event.get("voters") or {}
        theirs = [pid for pid in voters if pid in pids]
        if theirs:
            remains["poll_ballots"] += len(theirs)
            kept = {pid: c for pid, c in voters.items() if pid not in pids}
            return {
                **event,
                "voters": kept,
                "redacted_voters": int(event.get("redacted_voters") or 0) + len(theirs),
            }
        return event
    if kind == "quiz.result" and event.get("participant_id") in pids:
        remains["quiz_answers"] += 1
        fields = ("type", "stage_id", "seq", "at", "poll_id", "correct")
        return {k: event[k] for k in fields if k in event} | ERASED
    if kind == "quiz.leaderboard":
        entries = event.get("entries") or []
        new = [
            {**e, "participant_id": "", "name": ""}
            if isinstance(e, dict) and e.get("participant_id") in pids
            else e
            for e in entries
        ]
        return {**event, "entries": new} if new != entries else event
    if kind == "consent.recorded":
        record = event.get("record") or {}
        if record.get("identity") == identity or record.get("participant_id") in pids:
            return {**event, "record": redacted_consent(record, None)}
        return event
    if kind == "moderation.audit":
        audit = dict(event)
        if event.get("actor_identity") == identity or event.get("actor") in pids:
            audit.update(actor_identity="", actor_name="")
        if event.get("target_identity") == identity or (
            event.get("target") in pids and event.get("target_identity")
        ):
            audit.update(target_identity=None, target_name=None)
        return audit
    if kind == "invitation" and event.get("by") in pids:
        return {**event, "by_name": ""}
    if kind == "observer.joined" and event.get("participant_id") in pids:
        return {**event, "name": ""}
    return event


def write_timeline(path: Path, events: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".erasing")
    with open(tmp, "wb") as f:
        packer = msgpack.Packer()
        for event in events:
            f.write(packer.pack(event))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def redacted_consent(record: dict[str, Any], was: str | None) -> dict[str, Any]:
    fields: tuple[str, ...] = (
        "stage_id",
        "session_id",
        "decision",
        "scopes",
        "policy_version",
        "at",
        "method",
    )
    kept: dict[str, Any] = {k: record[k] for k in fields if k in record}
    redacted: dict[str, Any] = {"type": REDACTED_TYPE, **kept}
    if was is not None:
        redacted["was"] = was
    return redacted
