"""The people ledger across nodes, in process (server/host/people.py): nodes on one backend append in
one order, each mirroring it into its own file; a node whose backend lost the log (the embedded one
after a restart) uploads its file; a file and a log with different histories are refused."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from recording.evidence import TrustedKey
from recording.keys import FileKeyStore
from recording.people import FILENAME, verify_people
from recording.signing import NodeKey
from server.auth import Authenticator, Claims
from server.backend import MemoryBackend, MemoryStore
from server.host.people import People, PeopleError

AUTH = Authenticator({"k": "k" * 40})
PLATFORM = AUTH.verify(AUTH.mint("ops", admin=True))
_ticks = itertools.count()


def clock() -> float:
    return 1_796_000_000.0 + next(_ticks) / 1000


def node(tmp_path: Path, name: str, store: MemoryStore, sent: list[tuple[str, dict[str, Any]]]) -> People:
    key = NodeKey.load_or_create(tmp_path / name / "keys" / "ledger-ed25519.key")

    def emit(kind: str, data: dict[str, Any]) -> None:
        sent.append((kind, data))

    return People(
        MemoryBackend(store),
        tmp_path / name / "people",
        lambda: key,
        FileKeyStore(tmp_path / name / "keys" / "people"),
        emit,
        clock,
    )


def own(identity: str) -> Claims:
    return AUTH.verify(AUTH.mint(identity))


async def test_nodes_racing_append_in_one_order_and_mirror_it(tmp_path: Path) -> None:
    store, sent = MemoryStore(), []
    a, b = node(tmp_path, "a", store, sent), node(tmp_path, "b", store, sent)
    calls = [
        (a if i % 2 else b).nominate(own(f"person-{i % 3}"), f"person-{i % 3}", f"nominee-{i}")
        for i in range(12)
    ]
    entries = await asyncio.gather(*calls)
    assert sorted(e.index for e in entries) == list(range(12)), "each append landed once"
    await a.entries(), await b.entries()  # each brings its file up to date
    files = [tmp_path / n / "people" / FILENAME for n in ("a", "b")]
    assert files[0].read_bytes() == files[1].read_bytes()
    for name in ("a", "b"):
        key = NodeKey.load_or_create(tmp_path / name / "keys" / "ledger-ed25519.key")
        verdict = verify_people(tmp_path / name / "people", TrustedKey(key.public, name))
        assert verdict.ok, verdict.message
    assert [k for k, _ in sent] == ["person.nominee_changed"] * 12
    assert set(await b.nominees("person-1")) == {f"nominee-{i}" for i in range(12) if i % 3 == 1}


async def test_a_restarted_embedded_node_uploads_its_file(tmp_path: Path) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    first = node(tmp_path, "a", MemoryStore(), sent)
    await first.nominate(own("alice"), "alice", "nina")
    await first.withdraw(PLATFORM, "alice", "nina")
    await first.nominate(PLATFORM, "alice", "otto")

    fresh = MemoryStore()  # the process restarted: the embedded backend's log is empty
    again = node(tmp_path, "a", fresh, sent)
    assert set(await again.nominees("alice")) == {"otto"}
    assert await MemoryBackend(fresh).people_count() == 3, "the file was uploaded to the log"
    entry = await again.nominate(own("alice"), "alice", "paula")
    assert entry.index == 3
    assert await again.may_act_for(own("paula"), "alice")
    assert not await again.may_act_for(own("nina"), "alice"), "withdrawn"


async def test_a_file_and_a_log_of_different_histories_are_refused(tmp_path: Path) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    store = MemoryStore()
    a = node(tmp_path, "a", store, sent)
    await a.nominate(own("alice"), "alice", "nina")
    elsewhere = node(tmp_path, "b", MemoryStore(), sent)  # another deployment's history
    await elsewhere.nominate(own("bob"), "bob", "otto")
    moved = node(tmp_path, "b", store, sent)  # that file, now on the first deployment's backend
    with pytest.raises(PeopleError) as refused:
        await moved.nominees("alice")
    assert (refused.value.status, refused.value.code) == (503, "people_diverged")
    with pytest.raises(PeopleError):
        await moved.nominate(own("carol"), "carol", "dora")
    assert await MemoryBackend(store).people_count() == 1, "nothing of the other history was mixed in"


async def test_a_condition_holds_at_the_records_place_in_the_order(tmp_path: Path) -> None:
    """Two nodes withdrawing the same nominee at once: one withdrawal is written, the other is told
    that the nominee is no longer in force (checked after catching up, at its place in the order)."""
    store, sent = MemoryStore(), []
    a, b = node(tmp_path, "a", store, sent), node(tmp_path, "b", store, sent)
    await a.nominate(own("alice"), "alice", "nina")
    results = await asyncio.gather(
        a.withdraw(PLATFORM, "alice", "nina"),
        b.withdraw(own("alice"), "alice", "nina"),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, PeopleError)]
    assert len(refused) == 1 and refused[0].code == "not_nominated", results
    assert [e.record["type"] for e in await b.entries()] == ["nomination.granted", "nomination.withdrawn"]
    doubled = await asyncio.gather(
        a.nominate(own("alice"), "alice", "otto"),
        b.nominate(PLATFORM, "alice", "otto"),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in doubled) == ["Entry", "PeopleError"], doubled
