"""The rules of server/host/people.py as plain calls: who may act for a person, and the ``person.*``
webhook payloads (the erased, corrected and exported ones are sent by the next steps of issue 15;
here each is built and delivered by real ``Webhooks`` to a real receiver, signed)."""

from __future__ import annotations

import time
from typing import Any

from recording.ledger import GENESIS, Entry, entry_hash
from recording.people import nomination_record
from server.auth import Authenticator
from server.host.people import (
    corrected_payload,
    erased_payload,
    exported_payload,
    may_act_for,
    nominee_changed_payload,
)
from server.host.webhooks import EVENT_TYPES, Webhooks, verify
from tests.server.test_webhooks import SECRET, Receiver, answers

AUTH = Authenticator({"k": "k" * 40})
T0 = 1_796_000_000.0


def claims(identity: str, **kwargs: Any) -> Any:
    return AUTH.verify(AUTH.mint(identity, **kwargs))


def entry(record: dict[str, Any], index: int = 4) -> Entry:
    return Entry(index, GENESIS, record, entry_hash(GENESIS, record, index))


def test_who_may_act_for_a_person() -> None:
    nominees = {"nina"}
    matrix = {
        "the person": (claims("alice"), True),
        "a nominee in force": (claims("nina"), True),
        "the platform": (claims("ops", admin=True), True),
        "a stranger": (claims("sam"), False),
        "a withdrawn nominee": (claims("walt"), False),
        "a moderator of a stage": (claims("mo", role="moderator", stage="ward-rounds"), False),
        "the person's stage token": (claims("alice", role="host", stage="ward-rounds"), False),
        "the person's club token": (claims("alice", club="cardio"), False),
        "a nominee's stage token": (claims("nina", stage="ward-rounds"), False),
    }
    got = {who: may_act_for(c, "alice", nominees) for who, (c, _) in matrix.items()}
    assert got == {who: allowed for who, (_, allowed) in matrix.items()}


def payloads() -> dict[str, dict[str, Any]]:
    erasure = entry({"type": "erasure", "identity": "alice", "at": T0})
    return {
        "person.nominee_changed": nominee_changed_payload(
            entry(nomination_record("nomination.withdrawn", "alice", "nina", "alice", "person", T0))
        ),
        "person.erased": erased_payload(
            "alice",
            at=T0,
            by="ops",
            sessions=[{"stage_id": "s1", "session_id": "x1", "path": "/not/sent"}],
            keys_destroyed=["ab" * 16],
            entry=erasure,
            report="/api/people/alice/erasures/4",
        ),
        "person.corrected": corrected_payload(
            "alice", at=T0, by="alice", fields=["name", "affiliation"], entry=erasure
        ),
        "person.exported": exported_payload(
            "alice", at=T0, by="nina", export_id="exp-1", size_bytes=1234, sha256="cd" * 32, entry=erasure
        ),
    }


def test_the_person_payloads_carry_decisions_and_references_never_content() -> None:
    built = payloads()
    assert set(built) == {t for t in EVENT_TYPES if t.startswith("person.")}
    assert built["person.nominee_changed"] == {
        "identity": "alice",
        "nominee": "nina",
        "change": "withdrawn",
        "by": "alice",
        "as": "person",
        "at": T0,
        "ledger_index": 4,
        "ledger_hash": built["person.nominee_changed"]["ledger_hash"],
    }
    erased = built["person.erased"]
    assert erased["sessions"] == [{"stage_id": "s1", "session_id": "x1"}], "no server paths"
    assert (erased["keys_destroyed"], erased["ledger_index"]) == (["ab" * 16], 4)
    assert built["person.corrected"]["fields"] == ["affiliation", "name"], "names of fields, not values"
    assert built["person.exported"]["sha256"] == "cd" * 32
    for payload in built.values():
        assert payload["identity"] == "alice" and len(payload["ledger_hash"]) == 64


async def test_each_person_event_reaches_a_receiver_signed() -> None:
    receiver = Receiver(answers(200))
    await receiver.start()
    webhooks = Webhooks([receiver.url], SECRET, node_id="n-test", timeout_s=2.0)
    await webhooks.start()
    try:
        built = payloads()
        for kind, data in built.items():
            webhooks.emit(kind, data)
        got = await receiver.wait_for(len(built))
    finally:
        await webhooks.close()
        await receiver.stop()
    assert [r.event["type"] for r in got] == list(built)
    for received, data in zip(got, built.values(), strict=True):
        assert verify(SECRET, received.headers["Medstage-Signature"], received.body, time.time())
        assert received.headers["Medstage-Event"] == received.event["type"]
        assert received.event["data"] == data
