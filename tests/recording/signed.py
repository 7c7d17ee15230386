"""Sessions signed as the recorder signs them (recording/session.py), for the ledger and CLI tests."""

from __future__ import annotations

import json
import time
from pathlib import Path

from recording.ledger import Ledger
from recording.signing import HEADS_FILENAME, NodeKey, SignedHead, append_head, public_text
from rooms.consent import ConsentRecord


def seal(session: Path, key: NodeKey, ledger: Ledger, *, final: bool, at: float | None = None) -> SignedHead:
    """Sign the ledger's head, append it to the heads file and put it in the manifest with the anchor."""
    head = key.sign(
        SignedHead(
            stage_id=session.parent.name,
            session_id=session.name,
            count=ledger.count,
            head=ledger.head,
            signed_at=time.time() if at is None else at,
            final=final,
            key_id=key.id,
        )
    )
    append_head(session / HEADS_FILENAME, head)
    manifest = {
        "stage_id": session.parent.name,
        "session_id": session.name,
        "ledger": "consent.jsonl",
        "ledger_count": ledger.count,
        "ledger_head": ledger.head,
        "ledger_heads": HEADS_FILENAME,
        "ledger_key": {"algorithm": "Ed25519", "key_id": key.id, "public_key": public_text(key.public)},
        "ledger_signature": head.to_dict(),
    }
    (session / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return head


def signed_session(
    root: Path, key: NodeKey, records: list[ConsentRecord], stage: str = "cardio", session_id: str = "rec-1"
) -> Path:
    """``root/stage/session_id`` with ``records`` in its ledger, a head signed after each and at the stop."""
    directory = root / stage / session_id
    directory.mkdir(parents=True)
    ledger = Ledger(directory / "consent.jsonl")
    seal(directory, key, ledger, final=False)
    for record in records:
        ledger.append(record)
        seal(directory, key, ledger, final=False)
    seal(directory, key, ledger, final=True)
    return directory
