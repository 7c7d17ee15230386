"""A recording node signs every session's consent ledger with its key, kept outside the recordings:
the key file is made (0600) at the first recording, its public half published beside the recordings,
and ``python -m recording verify`` on the session proves the ledger intact with it; a key the node
cannot use stops the recording with a reason, the stage goes on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

from recording.signing import key_id, load_public_key
from tests.conftest import ROOT, RunningNode, start_node
from tests.support.client import MedstageClient
from tests.support.waiting import eventually

POLICY = "2026-11"


async def record_briefly(node: RunningNode, rec_root: Path) -> tuple[Path, dict[str, object]]:
    stage = "sig-" + uuid.uuid4().hex[:6]
    async with MedstageClient(node.url) as host, MedstageClient(node.url) as viewer:
        await host.join(stage, "Dr Host", "host")
        await viewer.join(stage, "Dr View", "audience")
        started = await host.request({"type": "recording.start"})
        for client in (host, viewer):
            await client.request(
                {
                    "type": "consent.give",
                    "scopes": ["comments"],
                    "policy_version": POLICY,
                    "method": "settings",
                }
            )
        await host.request({"type": "recording.stop"})
        stopped = await host.wait_for("recording.stopped", timeout=10)
    session = rec_root / stage / str(started["session_id"])
    return session, stopped


def manifest(session: Path) -> dict[str, object]:
    return json.loads((session / "manifest.json").read_text())  # type: ignore[no-any-return]


async def test_a_session_is_signed_with_the_node_key_kept_outside_the_recordings(
    recording_node: RunningNode, rec_root: Path, tmp_path: Path
) -> None:
    session, _ = await record_briefly(recording_node, rec_root)
    await eventually(
        lambda: (session / "manifest.json").is_file() and manifest(session)["status"] == "complete", 15
    )
    key_file = tmp_path / "keys" / "ledger-ed25519.key"  # beside rec_root, never inside it
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = load_public_key(str(key_file))
    done = manifest(session)
    assert done["ledger_count"] == 2
    assert done["ledger_key"]["key_id"] == key_id(key)  # type: ignore[index]
    assert done["ledger_signature"]["final"] is True  # type: ignore[index]
    published = rec_root / ".keys" / (key_id(key).replace(":", "-") + ".pub")
    assert key_id(load_public_key(str(published))) == key_id(key)

    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "recording", "verify", str(session)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"ok: 2 records, chain intact and head signed by key {key_id(key)} ")
    assert "sealed at the stop: no record up to #1 was altered" in run.stdout


async def test_a_key_the_node_cannot_use_stops_the_recording_with_a_reason(tmp_path: Path) -> None:
    rec_root = tmp_path / "recordings"
    bad_key = tmp_path / "not-a-key.pem"
    bad_key.write_text("not a key\n")
    node = start_node(
        tmp_path,
        {
            "MEDSTAGE_RECORDING_MODE": "manual",
            "MEDSTAGE_RECORDINGS_DIR": str(rec_root),
            "MEDSTAGE_SIGNING_KEY": str(bad_key),
        },
    )
    try:
        async with MedstageClient(node.url) as host:
            await host.join("sig-" + uuid.uuid4().hex[:6], "Dr Host", "host")
            await host.request({"type": "recording.start"})
            stopped = await host.wait_for("recording.stopped", timeout=10)
            assert str(stopped["reason"]).startswith(f"cannot use the signing key: {bad_key} is not a PEM")
            await host.request({"type": "comment.post", "text": "the stage goes on"})
    finally:
        assert node.stop() == 0, node.log()[-3000:]
