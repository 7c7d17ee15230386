"""What of a recorded session may be shown to attendees: the ``share`` scope, read from the ledger.

A recording keeps what each person consented to (``media``, ``comments``); what is *shown to others*
afterwards (the composite export, the playback page's comment replay, names in the session report)
also needs ``share``. The decision is each person's **last** record in the session's consent ledger
under the session's policy version: a later withdrawal takes them out of every export built after it
(docs/recording.md, "Sharing"). Pure reading, no I/O beyond the two files named here.

A record's ``identity`` may be sealed with the person's key (recording/items.py). Given a ``ring``,
it is opened; a participant whose key is gone is *erased*: never shared, never named. Without a ring
(the composite export, which needs no names) a sealed record's clear ``person`` (the session's
pseudonym of the identity) groups one person's connections, and ``identity()`` answers None.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recording.items import Opener
from recording.ledger import read_entries
from recording.vault import ERASED, KeyRing, is_sealed

__all__ = ["SharePolicy"]

SHARE = "share"


@dataclass(frozen=True, slots=True)
class SharePolicy:
    """Who of a session may appear in what is shared, by participant id and by identity."""

    policy_version: str | None
    # participant id -> identity, for everyone the ledger or the manifest names (opened: never erased)
    identities: Mapping[str, str]
    # person -> the scopes of their last record (empty after a withdrawal or a decline); a person is
    # their identity, or "person:<pseudonym>" when it is sealed and no ring opened it
    scopes: Mapping[str, frozenset[str]]
    # participant id -> person, when it is not the identity (sealed, not opened)
    persons: Mapping[str, str] = field(default_factory=dict)
    erased: frozenset[str] = frozenset()  # participant ids whose person's key is gone

    @classmethod
    def of_session(cls, session_dir: str | Path, *, ring: KeyRing | None = None) -> SharePolicy:
        """From ``manifest.json`` (the policy version) and ``consent.jsonl`` (the decisions); ``ring``
        opens sealed identities (module docstring)."""
        root = Path(session_dir)
        manifest: dict[str, Any] = {}
        path = root / "manifest.json"
        if path.exists():
            manifest = json.loads(path.read_text(encoding="utf-8"))
        ledger = root / "consent.jsonl"
        records = [e.record for e in read_entries(ledger)] if ledger.exists() else []
        return cls.of_records(
            records, manifest.get("policy_version"), manifest.get("participants", ()), ring=ring
        )

    @classmethod
    def of_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        policy_version: str | None,
        participants: Iterable[Mapping[str, Any]] = (),
        *,
        ring: KeyRing | None = None,
    ) -> SharePolicy:
        opener = Opener(ring) if ring is not None else None
        identities: dict[str, str] = {}
        persons: dict[str, str] = {}
        scopes: dict[str, frozenset[str]] = {}
        erased: set[str] = set()

        def whose(pid: Any, record: Mapping[str, Any]) -> str | None:
            """The record's person (its identity, or its pseudonym); None: erased or unknown."""
            identity = record.get("identity")
            if is_sealed(identity):
                identity = opener.value(identity, "person") if opener is not None else None
                if identity is ERASED:
                    erased.add(pid)
                    return None
            if isinstance(identity, str):
                identities[pid] = identity
                return identity
            pseudonym = record.get("person")
            if isinstance(pseudonym, str) and is_sealed(record.get("identity")):
                persons[pid] = "person:" + pseudonym
                return persons[pid]
            return None

        for record in records:  # in ledger order: the last one of a person wins
            pid = record.get("participant_id")
            person = whose(pid, record) if isinstance(pid, str) else None
            if person is None:
                continue
            same_policy = policy_version is None or record.get("policy_version") == policy_version
            granted = record.get("scopes") or ()
            scopes[person] = frozenset(str(s) for s in granted) if same_policy else frozenset()
        for info in participants:  # the manifest's last records, for a ledger cut short
            pid = info.get("participant_id")
            consent = info.get("consent") or {}
            if not isinstance(pid, str) or not isinstance(consent, Mapping) or pid in erased:
                continue
            if pid in identities or pid in persons:
                continue
            person = whose(pid, consent)
            if (
                person is not None
                and person not in scopes
                and consent.get("policy_version") == policy_version
            ):
                scopes[person] = frozenset(str(s) for s in consent.get("scopes") or ())
        return cls(
            policy_version=policy_version,
            identities=identities,
            scopes=scopes,
            persons=persons,
            erased=frozenset(erased),
        )

    def identity(self, participant_id: str) -> str | None:
        return self.identities.get(participant_id)

    def allows(self, participant_id: str | None, scope: str = SHARE) -> bool:
        """Did this participant's person grant ``scope`` in their last decision? Unknown or erased: no."""
        if participant_id is None or participant_id in self.erased:
            return False
        person = self.identities.get(participant_id) or self.persons.get(participant_id)
        return person is not None and scope in self.scopes.get(person, frozenset())

    def shared(self, participant_id: str | None) -> bool:
        """May this participant's recorded content (tracks, comments, named answers) be shown?"""
        return self.allows(participant_id, SHARE)

    def track_shared(self, track: Mapping[str, Any]) -> bool:
        """A manifest track entry: its owner granted ``share`` (their media was recorded under
        ``media`` already, or the file would not exist)."""
        return self.shared(track.get("participant_id"))
