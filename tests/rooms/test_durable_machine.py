"""The stage machine of test_stage_machine.py, with consent and takeovers by another node.

What must always hold, on top of the stage's own invariants:
- the durable state goes through msgpack and ``restore`` unchanged: ``durable_state(restore(...))`` is
  the same state (nobody present, everyone who was remembered by identity, with their role);
- the restored stage answers every identity's consent as the original does, is not recording, and
  continues the log;
- everyone remembered who joins the restored stage with the token role they joined with gets their
  remembered role (a remembered host only while nobody else hosts); a banned identity is never remembered;
- a stage that was taken over mid-session keeps working (the stage machine's rules go on on it).
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from rooms.consent import SCOPES
from rooms.durable import durable_state, restore
from rooms.roles import Role
from rooms.stage import Stage, StageState
from tests.rooms.test_stage_machine import IDENTITIES, PIDS, ROLES, StageMachine

EVERY_IDENTITY = [f"i{i}" for i in range(5)]  # what IDENTITIES draws from


def through_msgpack(state: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = msgpack.unpackb(msgpack.packb(state))
    return decoded


class DurableMachine(StageMachine):
    @initialize(state=st.sampled_from([StageState.LIVE, StageState.SCHEDULED]))
    def create(self, state: StageState) -> None:  # replaces the parent's
        super().create(state)
        self.policy = self.stage.settings.consent_policy_version

    @rule(actor=PIDS, scopes=st.frozensets(st.sampled_from(sorted(SCOPES))))
    def decide_about_consent(self, actor: str, scopes: frozenset[str]) -> None:
        record_id = self.new_id("cr")
        self.run(lambda: self.stage.give_consent(actor, scopes, self.policy, "settings", self.now, record_id))

    @rule(really=st.integers(0, 7), shared_log_ahead=st.integers(0, 3))
    def another_node_takes_over(self, really: int, shared_log_ahead: int) -> None:
        if really:  # now and then: most steps should run on the stage
            return
        last_seq = self.stage.log.last_seq + shared_log_ahead
        self.stage = restore(through_msgpack(durable_state(self.stage)), last_seq=last_seq, now=self.now)
        self.ballots = {}  # polls are not part of the durable state

    @rule(pid=PIDS, identity=IDENTITIES, role=ROLES)
    def join(self, pid: str, identity: str, role: Role) -> None:  # the parent's, and the remembered role
        remembered = self.stage.remembered.get(identity)
        host_present = self.stage.host is not None
        was_present = pid in self.stage.participants
        super().join(pid, identity, role)
        if was_present or pid not in self.stage.participants:
            return  # refused
        expected = role
        same_token = remembered is not None and remembered.joined_as in (None, role)
        if remembered is not None and same_token and not (remembered.role is Role.HOST and host_present):
            expected = remembered.role
        assert self.stage.participants[pid].role is expected
        assert identity not in self.stage.remembered  # present: forgotten until they leave

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def the_log_has_no_gaps(self) -> None:  # replaces the parent's: a taken-over log starts later
        log = self.stage.log
        assert [e.seq for e in log.events] == list(range(log.start_seq + 1, log.last_seq + 1))

    @invariant()
    def banned_identities_are_not_remembered(self) -> None:
        assert not set(self.stage.remembered.people) & self.stage.banned_identities

    @invariant()
    def the_durable_state_round_trips(self) -> None:
        stage = self.stage
        saved = durable_state(stage)
        restored = restore(through_msgpack(saved), last_seq=0, now=self.now)
        assert durable_state(restored) == saved
        assert not restored.participants and not restored.recording.active
        assert restored.log.last_seq == stage.log.last_seq and not restored.log.events
        present = {p.identity for p in stage.participants.values() if p.identity != p.id}
        assert set(saved["people"]) == (set(stage.remembered.people) | present) - stage.banned_identities
        for identity in EVERY_IDENTITY:
            for scope in SCOPES:
                assert restored.consent.covers(identity, scope, self.policy) == stage.consent.covers(
                    identity, scope, self.policy
                )
        self.everyone_remembered_comes_back_in_their_role(restored, saved["people"])

    def everyone_remembered_comes_back_in_their_role(self, stage: Stage, people: dict[str, Any]) -> None:
        if stage.state is StageState.ENDED:
            return
        stage.locked = False  # the joins are what is checked, not the lock
        for n, (identity, person) in enumerate(people.items()):
            host_present = stage.host is not None
            token_role = Role(person.get("joined_as") or "audience")  # the token they joined with
            if token_role is Role.HOST and host_present:
                token_role = Role.AUDIENCE
            stage.join(f"back-{n}", "Back", token_role, self.now, identity=identity)
            role = stage.participants[f"back-{n}"].role
            if person["role"] == "host" and host_present:
                assert role is token_role
            else:
                assert role == person["role"]


DurableMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # As in test_consent_machine.py: the explain phase is too slow with deepcopies at every step.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
test_durable_machine = DurableMachine.TestCase
