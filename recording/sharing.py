"""What of a recorded session may be shown to attendees: the ``share`` scope, read from the ledger.

A recording keeps what each person consented to (``media``, ``comments``); what is *shown to others*
afterwards (the composite export, the playback page's comment replay, names in the session report)
also needs ``share``. The decision is each person's **last** record in the session's consent ledger
under the session's policy version: a later withdrawal takes them out of every export built after it
(docs/recording.md, "Sharing"). Pure reading, no I/O beyond the two files named here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recording.ledger import read_entries

__all__ = ["SharePolicy"]

SHARE = "share"


@dataclass(frozen=True, slots=True)
class SharePolicy:
    """Who of a session may appear in what is shared, by participant id and by identity."""

    policy_version: str | None
    # participant id -> identity, for everyone the ledger or the manifest names
    identities: Mapping[str, str]
    # identity -> the scopes of their last record (empty after a withdrawal or a decline)
    scopes: Mapping[str, frozenset[str]]

    @classmethod
    def of_session(cls, session_dir: str | Path) -> SharePolicy:
        """From ``manifest.json`` (the policy version) and ``consent.jsonl`` (the decisions)."""
        root = Path(session_dir)
        manifest: dict[str, Any] = {}
        path = root / "manifest.json"
        if path.exists():
            manifest = json.loads(path.read_text(encoding="utf-8"))
        ledger = root / "consent.jsonl"
        records = [e.record for e in read_entries(ledger)] if ledger.exists() else []
        return cls.of_records(records, manifest.get("policy_version"), manifest.get("participants", ()))

    @classmethod
    def of_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        policy_version: str | None,
        participants: Iterable[Mapping[str, Any]] = (),
    ) -> SharePolicy:
        identities: dict[str, str] = {}
        scopes: dict[str, frozenset[str]] = {}
        for record in records:  # in ledger order: the last one of an identity wins
            pid, identity = record.get("participant_id"), record.get("identity")
            if not isinstance(pid, str) or not isinstance(identity, str):
                continue
            identities[pid] = identity
            same_policy = policy_version is None or record.get("policy_version") == policy_version
            granted = record.get("scopes") or ()
            scopes[identity] = frozenset(str(s) for s in granted) if same_policy else frozenset()
        for person in participants:  # the manifest's last records, for a ledger cut short
            pid = person.get("participant_id")
            consent = person.get("consent") or {}
            identity = consent.get("identity") if isinstance(consent, Mapping) else None
            if isinstance(pid, str) and isinstance(identity, str) and pid not in identities:
                identities[pid] = identity
                if identity not in scopes and consent.get("policy_version") == policy_version:
                    scopes[identity] = frozenset(str(s) for s in consent.get("scopes") or ())
        return cls(policy_version=policy_version, identities=identities, scopes=scopes)

    def identity(self, participant_id: str) -> str | None:
        return self.identities.get(participant_id)

    def allows(self, participant_id: str | None, scope: str = SHARE) -> bool:
        """Did this participant's person grant ``scope`` in their last decision? Unknown: no."""
        if participant_id is None:
            return False
        identity = self.identities.get(participant_id)
        return identity is not None and scope in self.scopes.get(identity, frozenset())

    def shared(self, participant_id: str | None) -> bool:
        """May this participant's recorded content (tracks, comments, named answers) be shown?"""
        return self.allows(participant_id, SHARE)

    def track_shared(self, track: Mapping[str, Any]) -> bool:
        """A manifest track entry: its owner granted ``share`` (their media was recorded under
        ``media`` already, or the file would not exist)."""
        return self.shared(track.get("participant_id"))
