"""recording/retention.py with the clock passed in: an expired session loses its media, timeline and
exports and keeps its ledger and manifest as evidence; the deletion is a signed ledger record that
``verify`` accepts and names; a session not yet due, one still recording and a dry run change nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from recording.evidence import TrustedKey, verify_session
from recording.ledger import read_entries
from recording.report import build
from recording.retention import DAY_S, NotDeletable, delete_session, sweep
from recording.signing import NodeKey
from tests.conftest import ROOT
from tests.recording.recorded import Recorded, record_session


@pytest.fixture
def key(tmp_path: Path) -> NodeKey:
    return NodeKey.load_or_create(tmp_path / "keys" / "ledger-ed25519.key")


@pytest.fixture
async def recorded(tmp_path: Path, key: NodeKey) -> Recorded:
    recorded = await record_session(tmp_path / "recordings", key)
    # What another helper's export would leave there, and a track file: all of it must go.
    (recorded.session / "exports").mkdir()
    (recorded.session / "exports" / "composite.mp4").write_bytes(b"\0" * 1000)
    (recorded.session / "tracks" / "p-host-audio-1.webm").write_bytes(b"\x1a\x45\xdf\xa3")
    return recorded


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its content: a dry run must leave it as it was."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def manifest(session: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((session / "manifest.json").read_text())


def set_retention(session: Path, days: int | None) -> None:
    data = manifest(session)
    data["retention_days"] = days
    (session / "manifest.json").write_text(json.dumps(data))


async def test_a_session_is_swept_only_once_its_retention_is_over(recorded: Recorded, key: NodeKey) -> None:
    root = recorded.session.parent.parent
    set_retention(recorded.session, 30)
    before = tree(root)
    day_29 = recorded.stopped_at + 29 * DAY_S
    assert sweep(root, day_29, 0, key) == ([], [])
    assert tree(root) == before, "not due: nothing touched"

    day_31 = recorded.stopped_at + 31 * DAY_S
    would, _ = sweep(root, day_31, 0, key, dry_run=True)
    assert [c.session_id for c in would] == ["rec-1"]
    assert would[0].paths == ["tracks", "exports", "timeline.json", "timeline.msgpack"]
    assert tree(root) == before, "a dry run changes nothing"

    deleted, refused = sweep(root, day_31, 0, key)
    assert [c.session_id for c in deleted] == ["rec-1"] and refused == []
    session = recorded.session
    assert sorted(p.name for p in session.iterdir()) == [
        "consent.heads.jsonl",
        "consent.jsonl",
        "manifest.json",
    ]
    done = manifest(session)
    assert done["status"] == "deleted" and done["previous_status"] == "complete"
    assert done["deleted_at"] == day_31 and done["deletion"]["reason"] == "retention"
    last = read_entries(session / "consent.jsonl")[-1].record
    assert (last["type"], last["at"], last["by"], last["retention_days"]) == (
        "deletion",
        day_31,
        "sweeper",
        30,
    )
    assert "tracks" in last["deleted"] and "exports" in last["deleted"]
    evidence = verify_session(session, TrustedKey(key.public, "test key"))
    assert evidence.ok, evidence.message
    assert (
        "media, timeline and exports were deleted at" in evidence.message and "retention" in evidence.message
    )
    # The report still answers from what is kept: who consented, no timeline.
    assert build(session)["media_deleted"] is True

    again = tree(root)
    assert sweep(root, day_31 + DAY_S, 0, key) == ([], [])
    assert tree(root) == again, "a deleted session is not deleted twice"


async def test_the_default_applies_to_sessions_without_their_own_and_zero_keeps_forever(
    recorded: Recorded, key: NodeKey
) -> None:
    root = recorded.session.parent.parent
    far = recorded.stopped_at + 10_000 * DAY_S
    assert sweep(root, far, 0, key, dry_run=True)[0] == [], "default 0: forever"
    assert len(sweep(root, far, 7, key, dry_run=True)[0]) == 1, "the default's 7 days"
    set_retention(recorded.session, 0)  # the stage (or club) keeps it forever, whatever the default
    assert sweep(root, far, 7, key, dry_run=True)[0] == []
    set_retention(recorded.session, 100)
    assert sweep(root, recorded.stopped_at + 99 * DAY_S, 7, key, dry_run=True)[0] == []


async def test_a_recording_session_is_never_swept_nor_deleted(recorded: Recorded, key: NodeKey) -> None:
    data = manifest(recorded.session)
    data["status"] = "recording"
    (recorded.session / "manifest.json").write_text(json.dumps(data))
    root = recorded.session.parent.parent
    before = tree(root)
    assert sweep(root, recorded.stopped_at + 1000 * DAY_S, 1, key) == ([], [])
    with pytest.raises(NotDeletable) as refused:
        delete_session(recorded.session, now=recorded.stopped_at, reason="by hand", by="x", signing_key=key)
    assert refused.value.code == "recording"
    assert tree(root) == before


async def test_without_the_signing_key_nothing_is_deleted(recorded: Recorded, tmp_path: Path) -> None:
    other = NodeKey.load_or_create(tmp_path / "other" / "key")
    root = recorded.session.parent.parent
    before = tree(root)
    deleted, refused = sweep(root, recorded.stopped_at + 10 * DAY_S, 1, other)
    assert deleted == [] and [why.code for _, why in refused] == ["no_key"]
    assert tree(root) == before


async def test_the_command_line_sweeps_with_the_nodes_key(recorded: Recorded, key: NodeKey) -> None:
    root = recorded.session.parent.parent
    set_retention(recorded.session, 30)
    at = str(recorded.stopped_at + 31 * DAY_S)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "recording", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    before = tree(root)
    dry = run("sweep", "--root", str(root), "--dry-run", "--at", at)
    assert dry.returncode == 0 and dry.stdout.startswith("would delete cardio/rec-1 (retention 30 days"), dry
    assert tree(root) == before
    # The key is found where the node keeps it: keys/ beside the recordings directory.
    done = run("sweep", "--root", str(root), "--at", at)
    assert done.returncode == 0 and done.stdout.startswith("deleted cardio/rec-1"), done
    verified = run("verify", str(recorded.session))
    assert verified.returncode == 0, verified
    assert "were deleted at" in verified.stdout


async def test_a_session_being_exported_is_not_deleted_and_an_export_of_a_deleted_one_makes_nothing(
    recorded: Recorded, key: NodeKey
) -> None:
    from recording.composite import CompositeExport
    from recording.composite.export import export_lock
    from recording.composite.plan import ExportError

    session = recorded.session
    (session / "exports").mkdir(exist_ok=True)
    held = export_lock(session)  # as a running export holds it
    assert held is not None
    try:
        with pytest.raises(NotDeletable) as refused:
            delete_session(session, now=recorded.stopped_at, reason="by hand", by="x", signing_key=key)
        assert refused.value.code == "exporting"
        assert (session / "tracks").is_dir() and json.loads((session / "manifest.json").read_text())[
            "status"
        ] != "deleted"
    finally:
        held.release()
    assert delete_session(session, now=recorded.stopped_at, reason="by hand", by="x", signing_key=key)
    assert not (session / "exports").exists()
    with pytest.raises(ExportError, match="deleted"):
        CompositeExport(session).run()
    assert not (session / "exports").exists(), "an export of a deleted session made its directory again"
