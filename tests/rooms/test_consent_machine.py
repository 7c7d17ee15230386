"""The stage machine of test_stage_machine.py, recording and deciding about consent amid everything else.

What must always hold, on top of the stage's own invariants:
- a person's effective consent (``consent_of``, ``covers``, their snapshot) is their identity's last
  ``consent.recorded`` record in the log, and nothing else;
- no record ever concerns anyone but the person who issued the command, and no other command records;
- a valid decision or withdrawal is never refused, an invalid one always is (and changes nothing);
- the recording is on only between a start and a stop, never when the stage's mode is off or after the
  end; starting asks exactly the people present who have not decided under the current policy;
- with ``speaking_requires_consent``, nobody accepts an invitation to speak, nor starts publishing while
  recording, without consent to record their media.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, MultipleResults, initialize, invariant, multiple, rule

from rooms.consent import SCOPES, ConsentRecord, ConsentState
from rooms.events import (
    ConsentRecorded,
    ConsentRequested,
    Event,
    InvitationAnswered,
    ModerationAudit,
    PublishingStarted,
    RecordingStarted,
    RecordingStopped,
)
from rooms.rates import Rate, RateLimiter, RateLimits
from rooms.roles import is_moderator
from rooms.stage import StageState
from tests.rooms.test_stage_machine import MODS, PIDS, StageMachine

POLICY = "2026-11"
SCOPE_SETS = st.frozensets(st.sampled_from(["media", "media", "comments", "share", "camera"]), max_size=3)
POLICIES = st.sampled_from([POLICY] * 5 + ["2025-01"])
METHODS = st.sampled_from(
    ["join_prompt", "recording_prompt", "settings", "invitation"] * 2 + ["withdrawal", "fax"]
)
MODES = st.sampled_from(["off", "manual", "manual", "auto", "auto"])


class ConsentMachine(StageMachine):
    consenters = Bundle("consenters")  # people who consented to something at some point

    @initialize(
        state=st.sampled_from([StageState.LIVE, StageState.SCHEDULED]), mode=MODES, requires=st.booleans()
    )
    def create(self, state: StageState, mode: str, requires: bool) -> None:  # replaces the parent's
        super().create(state)
        # The stage reads these settings each time it decides; the rest stays as the parent set it up.
        self.stage.settings = replace(
            self.stage.settings, recording_mode=mode, speaking_requires_consent=requires
        )
        # This machine is about what consent decides, not how often one may decide (rooms/rates.py,
        # tests/rooms/test_rates.py): without this, an 11th decision within 60 s is rate_limited.
        generous = Rate(1_000_000, 1.0)
        self.stage.rates = RateLimiter(
            replace(
                self.stage.settings,
                rates=RateLimits(consent=generous, media=generous, join=generous, moderation=generous),
            ).rate_rules()
        )
        self.deciding: str | None = None  # who runs the consent command in progress, if any

    # --- every command goes through here ----------------------------------------------------------

    def run(self, command: Callable[[], list[Event]]) -> list[Event] | None:
        events = super().run(command)
        for event in events or []:
            if isinstance(event, ConsentRecorded):
                assert event.record.participant_id == self.deciding, "a record about someone else"
                assert event.record.identity == self.identity(event.record.participant_id)
            if isinstance(event, ConsentRequested):
                assert any(isinstance(e, RecordingStarted) for e in events), "asked without a recording start"
            if self.stage.settings.speaking_requires_consent:
                if isinstance(event, InvitationAnswered) and event.accepted:
                    assert self.stage.covers(event.participant_id, "media"), "a speaker without consent"
                if isinstance(event, PublishingStarted) and self.stage.recording.active:
                    assert self.stage.covers(event.participant, "media"), "recorded without consent"
        return events

    def decide(self, actor: str, command: Callable[[], list[Event]]) -> list[Event] | None:
        self.deciding = actor
        try:
            return self.run(command)
        finally:
            self.deciding = None

    def open_for(self, actor: str) -> bool:
        """Whether ``actor`` may issue commands at all: present, on a stage that has not ended."""
        return actor in self.stage.participants and self.stage.state is not StageState.ENDED

    def last_record(self, identity: str) -> ConsentRecord | None:
        return next(
            (
                e.record
                for e in reversed(self.stage.log.events)
                if isinstance(e, ConsentRecorded) and e.record.identity == identity
            ),
            None,
        )

    # --- rules ------------------------------------------------------------------------------------

    @rule(actor=PIDS, scopes=SCOPE_SETS, policy=POLICIES, method=METHODS)
    def give_consent(self, actor: str, scopes: frozenset[str], policy: str, method: str) -> None:
        valid = (
            self.open_for(actor)
            and scopes <= SCOPES
            and policy == POLICY
            and method not in ("withdrawal", "fax")
        )
        identity = self.identity(actor)
        previous = self.last_record(identity) if identity else None
        changed = previous is not None and bool(previous.scopes) and frozenset(previous.scopes) != scopes
        record_id = self.new_id("cr")
        events = self.decide(
            actor, lambda: self.stage.give_consent(actor, scopes, policy, method, self.now, record_id)
        )
        assert (events is not None) == valid, f"valid={valid} but events={events}"
        if events is not None:
            (event,) = events
            assert isinstance(event, ConsentRecorded)
            record = event.record
            assert record.scopes == tuple(sorted(scopes))
            assert record.decision == ("declined" if not scopes else "changed" if changed else "granted")
            assert record.session_id == self.stage.recording.session_id
            assert (record.method, record.policy_version, record.at) == (method, policy, self.now)

    @rule(
        target=consenters,
        actor=PIDS,
        scopes=st.sampled_from([frozenset({"media"}), frozenset({"media", "comments", "share"})]),
    )
    def consent_to_media(self, actor: str, scopes: frozenset[str]) -> MultipleResults[str] | str:
        """Often enough that speakers get their consent before accepting or publishing."""
        record_id = self.new_id("cr")
        events = self.decide(
            actor, lambda: self.stage.give_consent(actor, scopes, POLICY, "invitation", self.now, record_id)
        )
        assert (events is not None) == self.open_for(actor)
        return multiple() if events is None else actor

    @rule(actor=consenters)
    def withdraw_consent(self, actor: str) -> None:
        self.withdraw(actor)

    @rule(actor=PIDS)
    def withdraw_consent_perhaps_without_any(self, actor: str) -> None:
        self.withdraw(actor)

    def withdraw(self, actor: str) -> None:
        identity = self.identity(actor)
        previous = self.last_record(identity) if identity else None
        valid = self.open_for(actor) and previous is not None and bool(previous.scopes)
        record_id = self.new_id("cr")
        events = self.decide(actor, lambda: self.stage.withdraw_consent(actor, self.now, record_id))
        assert (events is not None) == valid
        if events is not None:
            assert [e.record.decision for e in events] == ["withdrawn"]  # type: ignore[attr-defined]
            assert not any(self.stage.covers(actor, scope) for scope in SCOPES)

    @rule(actor=MODS)
    def start_recording(self, actor: str) -> None:
        self.start_recording_by(actor)

    @rule()
    def the_host_starts_recording(self) -> None:
        """Recording sessions are the point here: a second, likelier way to start one."""
        self.start_recording_by("p0")

    def start_recording_by(self, actor: str) -> None:
        stage = self.stage
        person = stage.participants.get(actor)
        valid = (
            self.open_for(actor)
            and person is not None
            and is_moderator(person.role)
            and stage.settings.recording_mode != "off"
            and stage.state is StageState.LIVE
            and not stage.recording.active
        )
        undecided = [p.id for p in stage.participants.values() if self.last_record(p.identity) is None]
        session_id = self.new_id("rec")
        events = self.run(lambda: stage.start_recording(actor, session_id, self.now))
        assert (events is not None) == valid
        if events is not None:
            assert isinstance(events[0], ModerationAudit) and events[0].action == "recording.start"
            assert events[1] == RecordingStarted(
                stage=stage.id, at=self.now, seq=events[1].seq, session_id=session_id, by=actor
            )
            assert [e.participant_id for e in events[2:]] == undecided  # type: ignore[attr-defined]

    @rule(actor=MODS)
    def stop_recording(self, actor: str) -> None:
        person = self.stage.participants.get(actor)
        valid = (
            self.open_for(actor)
            and person is not None
            and is_moderator(person.role)
            and self.stage.settings.recording_mode != "off"
            and self.stage.recording.active
        )
        events = self.run(lambda: self.stage.stop_recording(actor, self.now))
        assert (events is not None) == valid

    @rule(actor=MODS, other=PIDS)
    def invite_and_accept(self, actor: str, other: str) -> None:
        """An invitation answered at once: acceptances are frequent enough to meet the consent rule."""
        if self.run(lambda: self.stage.invite(actor, other, self.now)) is not None:
            self.run(lambda: self.stage.accept_invitation(other, self.now))

    @rule(pid=st.sampled_from(["p0", "p2"]), kinds=st.sampled_from([("audio",), ("audio", "video")]))
    def host_or_speaker_publishes(self, pid: str, kinds: tuple[str, ...]) -> None:
        """Those who may publish try often, recording or not, consenting or not."""
        self.run(lambda: self.stage.start_publishing(pid, kinds, self.now))

    @rule(same_session=st.booleans())
    def the_recorder_fails(self, same_session: bool) -> None:
        session_id = self.stage.recording.session_id if same_session else "rec-gone"
        events = self.run(lambda: self.stage.recording_failed(session_id or "none", "disk full", self.now))
        assert events is not None and bool(events) == (same_session and session_id is not None)
        assert not self.stage.recording.active or not same_session

    @rule()
    def record_by_itself(self) -> None:
        """What the shell does after creating or starting a stage."""
        due = self.stage.recording_due
        events = self.run(lambda: self.stage.start_auto_recording(self.new_id("auto"), self.now))
        assert (events is not None) == due

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def effective_consent_is_the_last_record(self) -> None:
        stage = self.stage
        last: dict[str, ConsentRecord] = {}
        for event in stage.log.events:
            if isinstance(event, ConsentRecorded):
                last[event.record.identity] = event.record
        assert stage.consent.last == last
        for pid, person in stage.participants.items():
            record = last.get(person.identity)
            expected = None if record is None else ConsentState.of(record)
            assert stage.consent_of(pid) == expected
            for scope in SCOPES:
                assert stage.covers(pid, scope) == (record is not None and scope in record.scopes)
            mine = stage.snapshot_for(pid)["consent"]["mine"]  # type: ignore[index]
            assert mine == (
                None
                if record is None
                else {"scopes": record.scopes, "decision": record.decision, "at": record.at}
            )
        assert stage.consent.record_ids == {
            e.record.record_id for e in stage.log.events if isinstance(e, ConsentRecorded)
        }

    @invariant()
    def recording_is_on_only_between_a_start_and_a_stop(self) -> None:
        stage = self.stage
        switches = [e for e in stage.log.events if isinstance(e, RecordingStarted | RecordingStopped)]
        assert all(isinstance(e, RecordingStarted) for e in switches[0::2])
        assert all(isinstance(e, RecordingStopped) for e in switches[1::2])
        assert all(a.session_id == b.session_id for a, b in zip(switches[0::2], switches[1::2], strict=False))
        assert stage.recording.active == (len(switches) % 2 == 1)
        if stage.recording.active:
            assert stage.recording.session_id == switches[-1].session_id
        assert stage.recording.sessions == [e.session_id for e in switches[0::2]]
        assert len(set(stage.recording.sessions)) == len(stage.recording.sessions)
        if stage.settings.recording_mode == "off":
            assert not switches
        if stage.state is StageState.ENDED:
            assert not stage.recording.active


ConsentMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # The explain phase traces every line of a failing run: with deepcopies of the stage at each step it
    # takes minutes, past the suite's timeout. The shrunk steps are explanation enough.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
test_consent_machine = ConsentMachine.TestCase
