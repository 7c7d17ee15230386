"""The people ledger's file side (recording/people.py): a chain with signed heads that
``verify_people`` checks like a session's; a record changed on disk, even with every hash after it
recomputed, is found; the nominees in force are folded from the records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recording.evidence import TrustedKey
from recording.ledger import GENESIS, LedgerError, entry_hash
from recording.people import (
    FILENAME,
    HEADS_FILENAME,
    PeopleLedger,
    nomination_record,
    nominations,
    verify_people,
)
from recording.signing import NodeKey, read_heads

T0 = 1_796_000_000.0


def grant(identity: str, nominee: str, at: float) -> dict[str, object]:
    return nomination_record("nomination.granted", identity, nominee, identity, "person", at)


def withdraw(identity: str, nominee: str, at: float) -> dict[str, object]:
    return nomination_record("nomination.withdrawn", identity, nominee, identity, "person", at)


@pytest.fixture
def key(tmp_path: Path) -> NodeKey:
    return NodeKey.load_or_create(tmp_path / "keys" / "ledger-ed25519.key")


def write(ledger: PeopleLedger, record: dict[str, object], at: float) -> None:
    ledger.write([ledger.prepare(record)], at)


def test_records_chain_sign_and_verify(tmp_path: Path, key: NodeKey) -> None:
    directory = tmp_path / "people"
    ledger = PeopleLedger(directory, key)
    write(ledger, grant("alice", "bob", T0), T0)
    write(ledger, grant("alice", "carol", T0 + 1), T0 + 1)
    write(ledger, withdraw("alice", "bob", T0 + 2), T0 + 2)
    assert (directory.stat().st_mode & 0o777) == 0o700
    lines = (directory / FILENAME).read_text().splitlines()
    assert [json.loads(line)["record"]["type"] for line in lines] == [
        "nomination.granted",
        "nomination.granted",
        "nomination.withdrawn",
    ]
    heads, _ = read_heads(directory / HEADS_FILENAME)
    assert [(h.count, h.stage_id, h.session_id) for _, h in heads if h] == [
        (1, "@people", "ledger"),
        (2, "@people", "ledger"),
        (3, "@people", "ledger"),
    ]
    verdict = verify_people(directory, TrustedKey(key.public, "test key"))
    assert verdict.ok, verdict.message
    assert verdict.message.startswith("ok: 3 records")
    state = nominations(PeopleLedger(directory, key).entries)  # as a restarted node reads it
    assert list(state["alice"]) == ["carol"] and state["alice"]["carol"].index == 1

    other = NodeKey.load_or_create(tmp_path / "other.key")
    refused = verify_people(directory, TrustedKey(other.public, "another key"))
    assert not refused.ok and "not by" in refused.message


def test_a_record_rewritten_with_its_hashes_recomputed_is_found(tmp_path: Path, key: NodeKey) -> None:
    directory = tmp_path / "people"
    ledger = PeopleLedger(directory, key)
    for n in range(4):
        write(ledger, grant("alice", f"nominee-{n}", T0 + n), T0 + n)
    path = directory / FILENAME
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    entries[1]["record"]["nominee"] = "mallory"  # the forger's change
    with path.open("w") as f:  # and every hash after it recomputed, so the chain alone holds
        prev = GENESIS
        for entry in entries:
            entry["prev"], entry["hash"] = prev, entry_hash(prev, entry["record"], entry["index"])
            prev = entry["hash"]
            f.write(json.dumps(entry) + "\n")
    verdict = verify_people(directory, TrustedKey(key.public, "test key"))
    assert not verdict.ok
    assert "record 1 was altered after it was signed" in verdict.message, verdict.message

    # A plain edit breaks the chain itself, and the ledger refuses to append after it.
    entries[2]["record"]["nominee"] = "eve"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    verdict = verify_people(directory, TrustedKey(key.public, "test key"))
    assert not verdict.ok and "record 2 was altered" in verdict.message, verdict.message
    with pytest.raises(LedgerError):
        PeopleLedger(directory, key)


def test_only_known_record_types_are_written(tmp_path: Path, key: NodeKey) -> None:
    ledger = PeopleLedger(tmp_path / "people", key)
    with pytest.raises(ValueError):
        ledger.prepare({"type": "nomination.sold", "identity": "a"})
    with pytest.raises(ValueError):
        nomination_record("erasure", "a", "b", "a", "person", T0)
    with pytest.raises(ValueError):
        nomination_record("nomination.granted", "a", "b", "a", "stranger", T0)
    assert ledger.count == 0 and not (tmp_path / "people" / FILENAME).exists()


def test_a_write_cut_short_by_a_crash_is_dropped_at_the_next_open(tmp_path: Path, key: NodeKey) -> None:
    directory = tmp_path / "people"
    ledger = PeopleLedger(directory, key)
    write(ledger, grant("alice", "bob", T0), T0)
    with (directory / FILENAME).open("a") as f:
        f.write('{"index":1,"prev":"')  # the crash
    with (directory / HEADS_FILENAME).open("a") as f:
        f.write('{"count":')
    reopened = PeopleLedger(directory, key)
    assert reopened.count == 1
    write(reopened, grant("alice", "carol", T0 + 1), T0 + 1)
    verdict = verify_people(directory, TrustedKey(key.public, "test key"))
    assert verdict.ok and verdict.message.startswith("ok: 2 records"), verdict.message
