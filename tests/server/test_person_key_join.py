"""A join does not depend on the people's key store (issue 15): when it cannot answer, the person joins
all the same (like unreadable revocations); when it can, their key is in the node's ring before they
are in the stage."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.support.client import MedstageClient
from tests.support.inprocess import serve


async def test_a_join_puts_the_persons_key_in_the_ring(tmp_path: Path) -> None:
    stage = "keys-" + uuid.uuid4().hex[:8]
    async with serve(tmp_path) as running, MedstageClient(running.url) as host:
        joined = await host.join(stage, "Host", "host", identity="doctor-with-key", answer=False)
        assert joined["type"] == "joined", joined
        key = running.node.ring.for_identity("doctor-with-key")
        assert key is not None
        assert await running.node.keys.get("doctor-with-key") == key


async def test_a_join_goes_on_when_the_key_store_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the key store wants its directory")
    stage = "keys-" + uuid.uuid4().hex[:8]
    async with (
        serve(tmp_path, people_keys_dir=str(blocker / "people")) as running,
        MedstageClient(running.url) as host,
    ):
        joined = await host.join(stage, "Host", "host", identity="doctor-no-store", answer=False)
        assert joined["type"] == "joined", joined
        assert running.node.ring.for_identity("doctor-no-store") is None
        assert host.participant_id in running.node.stages[stage].stage.participants
