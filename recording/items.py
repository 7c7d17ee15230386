"""A person's items inside a recording, sealed with their key; and opened again by readers (issue 15).

The recorder seals, field by field, what a stored timeline event or consent record says *of a
person* with that person's key (recording/vault.py): a sealed field keeps its name and its value
becomes ``{"sealed": {"key_id", "data"}}``. What gives the recording its structure stays clear: ids,
times, types, statuses, vote counts, a poll's per-option totals, whether a quiz ballot was right. So
destroying the key (erasure) leaves every file structurally whole, and the consent ledger, which hashes
the sealed form, verifiable. The sealed fields (docs/recording.md, "Sealed timeline items"):

- comments and questions: ``text`` (purpose ``comment``, ``question``) and ``author_name`` (``name``);
- ``poll.voters``: each voter's choices (``vote``); ``quiz.result``: ``score`` (``answer``);
- ``quiz.leaderboard`` entries' ``name`` (``name``) and ``score`` (``answer``); the names of
  ``observer.joined``, ``invitation`` (``by_name``) and
  ``moderation.audit`` (``actor_name``, ``target_name``: ``name``; ``*_identity``: ``person``);
- consent records (ledger, ``consent.recorded``, the manifest's copy): ``identity`` (``person``) and
  ``name`` (``name``), plus ``person``, the session's pseudonym of the identity, in clear;
- the manifest's participants: ``name``.

People without a key (a key store that could not answer when they joined) stay plaintext, as
recordings were before keys. Readers open with a ``KeyRing``: a value whose key is gone reads as
``ERASED`` and the item becomes a placeholder with ``"erased": true`` (like the ``redacted`` one of
recording/timeline.py): its place, id and time stay, never its content or author.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack

from recording.keys import EnvelopeError, PersonKey
from recording.ledger import read_entries
from recording.vault import ERASED, KeyRing, is_sealed, open_value, seal_value, sealed_key_id

__all__ = [
    "ERASED_ITEM",
    "Names",
    "Opener",
    "Sealer",
    "key_ids",
    "session_key_ids",
]

log = logging.getLogger(__name__)

# identity -> the person's current display name (a correction), None: no correction.
Names = Callable[[str], str | None]

ERASED_ITEM = {"erased": True}
# What a comment's or question's placeholder keeps (the same as a redacted one, recording/timeline.py).
_KEPT = ("id", "at", "votes", "status")
_ITEMS = {
    "comment.posted": ("comment", "comment"),
    "comment.pinned": ("comment", "comment"),
    "question.asked": ("question", "question"),
    "question.updated": ("question", "question"),
}
_AUDIT = (("actor_identity", "actor_name"), ("target_identity", "target_name"))


class Sealer:
    """Seals the recorder's events and records with the keys of ``ring``. ``identity_of``: a
    participant (or observer) id's identity, None when unknown."""

    def __init__(self, ring: KeyRing, identity_of: Callable[[str], str | None]) -> None:
        self.ring = ring
        self.identity_of = identity_of

    def key(self, pid: Any) -> PersonKey | None:
        if not isinstance(pid, str):
            return None
        identity = self.identity_of(pid)
        return None if identity is None else self.ring.for_identity(identity)

    def event(self, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` (already redacted) as it is stored: its people's fields sealed."""
        type_ = event.get("type")
        if type_ in _ITEMS:
            field, purpose = _ITEMS[type_]
            item = event.get(field)
            if not isinstance(item, Mapping) or item.get("redacted"):
                return event
            key = self.key(item.get("author_id"))
            if key is None:
                return event
            return {**event, field: self._fields(item, key, {"text": purpose, "author_name": "name"})}
        if type_ == "poll.voters":
            voters = event.get("voters") or {}
            sealed = {}
            for pid, choices in voters.items():
                key = self.key(pid)
                sealed[pid] = choices if key is None else seal_value(key, list(choices), "vote")
            return {**event, "voters": sealed}
        if type_ == "quiz.result" and not event.get("redacted"):
            key = self.key(event.get("participant_id"))
            return event if key is None else self._fields(event, key, {"score": "answer"})
        if type_ == "quiz.leaderboard":
            entries = []
            for entry in event.get("entries") or ():
                key = self.key(entry.get("participant_id")) if isinstance(entry, Mapping) else None
                fields = {"name": "name", "score": "answer"}
                entries.append(entry if key is None else self._fields(entry, key, fields))
            return {**event, "entries": entries}
        if type_ == "moderation.audit":
            out = dict(event)
            for identity_field, name_field in _AUDIT:
                identity = event.get(identity_field)
                key = self.ring.for_identity(identity) if isinstance(identity, str) else None
                if key is not None:
                    out = self._fields(out, key, {identity_field: "person", name_field: "name"})
            return out
        if type_ == "observer.joined":
            key = self.key(event.get("participant_id"))
            return event if key is None else self._fields(event, key, {"name": "name"})
        if type_ == "invitation":
            key = self.key(event.get("by"))
            return event if key is None else self._fields(event, key, {"by_name": "name"})
        return event

    def record(self, record: Mapping[str, Any], person: str | None = None) -> dict[str, Any]:
        """A consent record as the ledger and the manifest store it: identity and name sealed with the
        person's key; ``person`` (the session's pseudonym of the identity) added in clear, so the
        ledger's records of one person can still be grouped and counted without their identity."""
        out = dict(record)
        if person is not None:
            out["person"] = person
        identity = record.get("identity")
        key = self.ring.for_identity(identity) if isinstance(identity, str) else None
        if key is None:
            return out
        return self._fields(out, key, {"identity": "person", "name": "name"})

    def name(self, info: Mapping[str, Any], identity: str) -> dict[str, Any]:
        """A manifest participant entry with its name sealed (when the person has a key)."""
        key = self.ring.for_identity(identity)
        return dict(info) if key is None else self._fields(info, key, {"name": "name"})

    @staticmethod
    def _fields(obj: Mapping[str, Any], key: PersonKey, fields: Mapping[str, str]) -> dict[str, Any]:
        out = dict(obj)
        for name, purpose in fields.items():
            value = out.get(name)
            if value is not None and not is_sealed(value):
                out[name] = seal_value(key, value, purpose)
        return out


class Opener:
    """Opens sealed fields with ``ring`` (None: no keys, every sealed value reads as erased)."""

    def __init__(self, ring: KeyRing | None) -> None:
        self.ring = ring if ring is not None else KeyRing()

    def value(self, obj: Any, purpose: str) -> Any:
        """A plain value as it is; a sealed one opened, ``ERASED`` when its key is gone. A damaged one
        is logged and reads as ``ERASED`` too: a reader shows nothing of it rather than failing."""
        if not is_sealed(obj):
            return obj
        try:
            return open_value(obj, self.ring, purpose)
        except EnvelopeError as exc:
            log.warning("a sealed value does not open", extra={"code": exc.code, "purpose": purpose})
            return ERASED

    def event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The event with its sealed fields opened; an item whose content is gone is a placeholder."""
        type_ = event.get("type")
        if type_ in _ITEMS:
            field, purpose = _ITEMS[type_]
            item = event.get(field)
            if not isinstance(item, Mapping) or item.get("redacted"):
                return dict(event)
            text, name = self.value(item.get("text"), purpose), self.value(item.get("author_name"), "name")
            if text is ERASED or name is ERASED:
                kept = {k: item[k] for k in _KEPT if k in item}
                return {**event, field: {**kept, **ERASED_ITEM}}
            return {**event, field: {**item, "text": text, "author_name": name}}
        if type_ == "poll.voters":
            voters, erased = {}, 0
            for pid, choices in (event.get("voters") or {}).items():
                opened = self.value(choices, "vote")
                if opened is ERASED:
                    erased += 1
                else:
                    voters[pid] = opened
            return {**event, "voters": voters, "erased_voters": erased}
        if type_ == "quiz.result" and not event.get("redacted"):
            score = self.value(event.get("score"), "answer")
            if score is ERASED:  # whether the ballot was right stays: the quiz's totals stay right
                fields = ("type", "stage_id", "seq", "at", "poll_id", "correct")
                return {k: event[k] for k in fields if k in event} | ERASED_ITEM
            return {**event, "score": score}
        if type_ == "quiz.leaderboard":
            entries = []
            for entry in event.get("entries") or ():
                if isinstance(entry, Mapping):
                    name = self.value(entry.get("name"), "name")
                    score = self.value(entry.get("score"), "answer")
                    if name is ERASED or score is ERASED:
                        entry = {**entry, "name": None, "score": None, **ERASED_ITEM}
                    else:
                        entry = {**entry, "name": name, "score": score}
                entries.append(entry)
            return {**event, "entries": entries}
        if type_ == "moderation.audit":
            out = dict(event)
            for identity_field, name_field in _AUDIT:
                out[identity_field] = self._or_none(event.get(identity_field), "person")
                out[name_field] = self._or_none(event.get(name_field), "name")
            return out
        if type_ == "consent.recorded" and isinstance(event.get("record"), Mapping):
            return {**event, "record": self.record(event["record"])}
        if type_ == "observer.joined":
            return {**event, "name": self._or_none(event.get("name"), "name")}
        if type_ == "invitation":
            return {**event, "by_name": self._or_none(event.get("by_name"), "name")}
        return dict(event)

    def record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A consent record with identity and name opened (None, and ``erased``, when the key is gone)."""
        identity = self.value(record.get("identity"), "person")
        name = self.value(record.get("name"), "name")
        out = {**record, "identity": None if identity is ERASED else identity}
        out["name"] = None if name is ERASED else name
        if identity is ERASED:
            out["erased"] = True
        return out

    def _or_none(self, value: Any, purpose: str) -> Any:
        opened = self.value(value, purpose)
        return None if opened is ERASED else opened


def key_ids(obj: Any) -> Iterator[str]:
    """The key ids of every sealed value inside ``obj`` (maps and lists, any depth)."""
    key_id = sealed_key_id(obj)
    if key_id is not None:
        yield key_id
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from key_ids(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from key_ids(value)


def session_key_ids(session_dir: Path) -> set[str]:
    """The key ids a session's sealed values were made with (its manifest, ledger and timeline)."""
    found: set[str] = set()
    try:
        found.update(key_ids(json.loads((session_dir / "manifest.json").read_text(encoding="utf-8"))))
    except (OSError, ValueError):
        pass
    ledger = session_dir / "consent.jsonl"
    if ledger.is_file():
        try:
            found.update(k for entry in read_entries(ledger) for k in key_ids(entry.record))
        except ValueError:
            pass
    packed = session_dir / "timeline.msgpack"
    if packed.is_file():
        unpacker = msgpack.Unpacker(raw=False)  # as recording/timeline.py's read(), which imports this
        try:
            with open(packed, "rb") as f:
                while chunk := f.read(65536):
                    unpacker.feed(chunk)
                    found.update(k for event in unpacker for k in key_ids(event))
        except ValueError:  # a damaged timeline: the keys of what was readable (its readers say the rest)
            pass
    return found
