"""recording/sharing.py: the ``share`` scope of each person's last decision, from ledger records."""

from __future__ import annotations

from recording.ledger import Ledger
from recording.sharing import SharePolicy


def _record(pid: str, identity: str, scopes: list[str], policy: str = "v1") -> dict[str, object]:
    return {"participant_id": pid, "identity": identity, "scopes": scopes, "policy_version": policy}


def test_last_decision_of_the_identity_decides() -> None:
    policy = SharePolicy.of_records(
        [
            _record("p-a", "alice", ["media", "share"]),
            _record("p-b", "bob", ["media"]),
            _record("p-c", "carol", ["media", "share"]),
            _record("p-c2", "carol", []),  # carol withdrew from a second connection
            _record("p-d", "dave", ["share"], policy="v0"),  # an older policy's grant counts for nothing
        ],
        "v1",
    )
    assert policy.shared("p-a")
    assert not policy.shared("p-b")
    assert not policy.shared("p-c") and not policy.shared("p-c2")
    assert not policy.shared("p-d")
    assert not policy.shared("p-unknown") and not policy.shared(None)
    assert policy.allows("p-b", "media")
    assert policy.track_shared({"participant_id": "p-a", "kind": "video"})
    assert policy.identity("p-c2") == "carol"


def test_reads_a_session_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ledger = Ledger(tmp_path / "consent.jsonl")
    ledger.append(_record("p-a", "alice", ["comments", "media", "share"]))
    ledger.append(_record("p-b", "bob", ["comments", "media"]))
    manifest = '{"policy_version": "v1", "participants": [{"participant_id": "p-z", "consent": %s}]}'
    (tmp_path / "manifest.json").write_text(
        manifest % '{"identity": "zed", "scopes": ["share"], "policy_version": "v1"}'
    )
    policy = SharePolicy.of_session(tmp_path)
    assert policy.policy_version == "v1"
    assert policy.shared("p-a") and not policy.shared("p-b")
    assert policy.shared("p-z")  # only in the manifest (a ledger cut short by a crash)
