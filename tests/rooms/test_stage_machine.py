"""Hypothesis drives a stage with random commands from random people and checks what must always hold.

- one role per person, and only what that role allows (one host; hands, invitations, publishing,
  mutes consistent with the role);
- a banned identity never rejoins and is never present;
- poll counts equal the ballots cast;
- a deleted comment never reappears (history, snapshots, pin, later events);
- the event log has no gaps (seq 1..n) and a command's events are the log's new tail;
- a refused command leaves the stage exactly as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from rooms.errors import Banned, DomainError, StageEnded
from rooms.events import CommentPinned, CommentPosted, Event, PollCounts
from rooms.polls import PollSpec, PollStatus
from rooms.roles import Permission, Role, allows, is_moderator
from rooms.stage import KINDS, Stage, StageSettings, StageState

PIDS = st.sampled_from([f"p{i}" for i in range(6)])
# Moderation commands mostly come from the host (p0) or the moderator (p1), sometimes from others.
MODS = st.sampled_from(["p0", "p1", "p1", "p0", "p1", "p3", "p2"])
IDENTITIES = st.sampled_from([f"i{i}" for i in range(5)])
ROLES = st.sampled_from([Role.AUDIENCE, Role.AUDIENCE, Role.SPEAKER, Role.MODERATOR, Role.HOST])
KIND = st.sampled_from(KINDS)
TEXT = st.sampled_from(["hi", "hello", "a longer remark", "", "x" * 41])


@st.composite
def specs(draw: st.DrawFn) -> PollSpec:
    """Mostly valid polls and quizzes, sometimes not (the stage must refuse those unchanged)."""
    multiple, quiz = draw(st.booleans()), draw(st.booleans())
    correct: tuple[int, ...] = ()
    if quiz:
        correct = draw(st.sampled_from([(0, 1), (1,)] if multiple else [(0,), (1,)]))
    return PollSpec(
        question="Q?",
        options=draw(st.sampled_from([("A", "B"), ("A", "B", "C")] * 3 + [("A",)])),
        multiple=multiple,
        anonymous=draw(st.booleans()),
        duration_s=draw(st.sampled_from([None, None, 5, 30, 5, 30, 1])),
        public_results=draw(st.booleans()),
        quiz=quiz,
        correct=draw(st.sampled_from([correct] * 12 + [(), (0, 0), (7,)])),
    )


CHOICES = st.sampled_from([[0], [1], [0], [1], [2], [0, 1], [1, 2], [], [0, 0], [5], [-1]])


class StageMachine(RuleBasedStateMachine):
    # Ids the shell made for comments, questions and polls that were accepted.
    comments = Bundle("comments")
    questions = Bundle("questions")
    polls = Bundle("polls")

    @initialize(state=st.sampled_from([StageState.LIVE, StageState.SCHEDULED]))
    def create(self, state: StageState) -> None:
        settings = StageSettings(
            max_publishers=2,
            comment_max_chars=40,
            comment_history=5,
            comment_rate=3,
            question_max_open=4,
            question_max_per_person=2,
        )
        self.stage = Stage("s", "T", 0.0, settings=settings, state=state)
        self.now = 0.0
        # Present from the start (p4 shares p3's identity: two tabs of one person); p5 comes later.
        for pid, role, identity in [
            ("p0", Role.HOST, "i0"),
            ("p1", Role.MODERATOR, "i1"),
            ("p2", Role.SPEAKER, "i2"),
            ("p3", Role.AUDIENCE, "i3"),
            ("p4", Role.AUDIENCE, "i3"),
        ]:
            self.stage.join(pid, pid.upper(), role, 0.0, identity=identity)
        self.banned: set[str] = set()
        self.deleted: dict[str, int] = {}  # comment id -> seq of its deletion
        self.ballots: dict[str, dict[str, tuple[int, ...]]] = {}  # poll -> identity -> choices
        self.ids = 0

    def new_id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}-{self.ids}"

    # --- running a command ------------------------------------------------------------------------

    def run(self, command: Callable[[], list[Event]]) -> list[Event] | None:
        """Run a command; a refusal must change nothing, a success must log exactly what it returns."""
        before = copy.deepcopy(self.stage)
        logged = len(self.stage.log.events)
        try:
            events = command()
        except DomainError as error:
            assert self.stage == before, f"refused ({error.code}) but changed the stage"
            return None
        assert self.stage.log.events[logged:] == events
        return events

    def identity(self, pid: str) -> str | None:
        person = self.stage.participants.get(pid)
        return person.identity if person else None

    # --- rules ------------------------------------------------------------------------------------

    @rule(dt=st.sampled_from([0.0, 0.5, 2.0, 11.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.run(lambda: self.stage.tick(self.now))
        self.run(lambda: self.stage.flush_reactions(self.now))

    @rule(pid=PIDS, identity=IDENTITIES, role=ROLES)
    def join(self, pid: str, identity: str, role: Role) -> None:
        before = copy.deepcopy(self.stage)
        try:
            self.stage.join(pid, pid.upper(), role, self.now, identity=identity)
        except DomainError as error:
            assert self.stage == before
            if identity in self.banned:
                assert isinstance(error, Banned | StageEnded)
            return
        assert identity not in self.banned, "a banned identity rejoined"

    @rule(pid=PIDS, really=st.integers(0, 3))
    def leave(self, pid: str, really: int) -> None:
        if really == 0:  # less often than the rest, or the stage empties
            self.run(lambda: self.stage.leave(pid, self.now))

    @rule(actor=MODS)
    def start(self, actor: str) -> None:
        self.run(lambda: self.stage.start(actor, self.now))

    @rule(actor=MODS, locked=st.booleans())
    def lock(self, actor: str, locked: bool) -> None:
        self.run(lambda: self.stage.lock(actor, locked, self.now))

    @rule(actor=MODS, really=st.integers(0, 19))
    def end(self, actor: str, really: int) -> None:
        if really == 0:  # rarely: an ended stage refuses everything after
            self.run(lambda: self.stage.end(actor, self.now))

    @rule(actor=MODS, other=PIDS, role=ROLES)
    def set_role(self, actor: str, other: str, role: Role) -> None:
        self.run(lambda: self.stage.set_role(actor, other, role, self.now))

    @rule(actor=PIDS)
    def raise_hand(self, actor: str) -> None:
        self.run(lambda: self.stage.raise_hand(actor, self.now))

    @rule(actor=MODS, other=st.none() | PIDS)
    def lower_hand(self, actor: str, other: str | None) -> None:
        self.run(lambda: self.stage.lower_hand(actor, other, self.now))

    @rule(actor=MODS, other=PIDS)
    def invite(self, actor: str, other: str) -> None:
        self.run(lambda: self.stage.invite(actor, other, self.now))

    @rule(actor=PIDS, accept=st.booleans())
    def answer_invitation(self, actor: str, accept: bool) -> None:
        if accept:
            self.run(lambda: self.stage.accept_invitation(actor, self.now))
        else:
            self.run(lambda: self.stage.decline_invitation(actor, self.now))

    @rule(actor=MODS, other=PIDS)
    def move_to_audience(self, actor: str, other: str) -> None:
        self.run(lambda: self.stage.move_to_audience(actor, other, self.now))

    @rule(pid=PIDS, kinds=st.sampled_from([("audio",), ("video",), ("audio", "video")]))
    def publish(self, pid: str, kinds: tuple[str, ...]) -> None:
        self.run(lambda: self.stage.start_publishing(pid, kinds, self.now))

    @rule(pid=PIDS)
    def stop_publishing(self, pid: str) -> None:
        self.run(lambda: self.stage.stop_publishing(pid, self.now))

    @rule(pid=PIDS, kind=KIND, muted=st.booleans())
    def mute_self(self, pid: str, kind: str, muted: bool) -> None:
        self.run(lambda: self.stage.set_muted(pid, kind, muted, self.now))

    @rule(actor=MODS, other=PIDS, kind=KIND, muted=st.booleans())
    def moderator_mute(self, actor: str, other: str, kind: str, muted: bool) -> None:
        self.run(lambda: self.stage.moderator_mute(actor, other, kind, muted, self.now))

    @rule(actor=MODS, other=PIDS, ban=st.booleans())
    def remove(self, actor: str, other: str, ban: bool) -> None:
        identity = self.identity(other)
        if ban:
            if self.run(lambda: self.stage.ban(actor, other, "", self.now)) is not None:
                assert identity is not None
                self.banned.add(identity)
        else:
            self.run(lambda: self.stage.remove(actor, other, "", self.now))

    @rule(actor=MODS, other=PIDS, muted=st.booleans())
    def chat_mute(self, actor: str, other: str, muted: bool) -> None:
        self.run(lambda: self.stage.chat_mute(actor, other, muted, self.now))

    @rule(actor=MODS, seconds=st.sampled_from([0, 3, 10, -1]))
    def slow_mode(self, actor: str, seconds: int) -> None:
        self.run(lambda: self.stage.set_slow_mode(actor, seconds, self.now))

    @rule(target=comments, actor=PIDS, text=TEXT)
    def post_comment(self, actor: str, text: str) -> MultipleResults[str] | str:
        comment_id = self.new_id("c")
        if self.run(lambda: self.stage.post_comment(actor, comment_id, text, self.now)) is None:
            return multiple()
        return comment_id

    @rule(actor=PIDS, comment_id=comments, text=TEXT)
    def post_comment_reusing_an_id(self, actor: str, comment_id: str, text: str) -> None:
        events = self.run(lambda: self.stage.post_comment(actor, comment_id, text, self.now))
        assert events is None or comment_id not in self.deleted, "a deleted comment's id came back"

    @rule(actor=st.sampled_from(["p0", "p1", "p2", "p3", "p4", "p5", "p1"]), comment_id=comments)
    def delete_comment(self, actor: str, comment_id: str) -> None:
        if self.run(lambda: self.stage.delete_comment(actor, comment_id, self.now)) is not None:
            self.deleted[comment_id] = self.stage.log.last_seq

    @rule(actor=MODS, comment_id=comments, unpin=st.integers(0, 4))
    def pin_comment(self, actor: str, comment_id: str, unpin: int) -> None:
        self.run(lambda: self.stage.pin_comment(actor, None if unpin == 0 else comment_id, self.now))

    @rule(actor=PIDS, emoji=st.sampled_from(["👏", "🎉", "nope"]))
    def react(self, actor: str, emoji: str) -> None:
        self.run(lambda: self.stage.react(actor, emoji, self.now))

    @rule(target=questions, actor=PIDS, text=TEXT)
    def ask(self, actor: str, text: str) -> MultipleResults[str] | str:
        question_id = self.new_id("q")
        if self.run(lambda: self.stage.ask_question(actor, question_id, text, self.now)) is None:
            return multiple()
        return question_id

    @rule(actor=PIDS, question_id=questions)
    def upvote(self, actor: str, question_id: str) -> None:
        self.run(lambda: self.stage.upvote_question(actor, question_id, self.now))

    @rule(actor=MODS, question_id=questions, dismiss=st.booleans())
    def answer_or_dismiss(self, actor: str, question_id: str, dismiss: bool) -> None:
        command = self.stage.dismiss_question if dismiss else self.stage.answer_question
        self.run(lambda: command(actor, question_id, self.now))

    @rule(target=polls, actor=MODS, spec=specs(), open_now=st.booleans())
    def create_poll(self, actor: str, spec: PollSpec, open_now: bool) -> MultipleResults[str] | str:
        poll_id = self.new_id("poll")
        if self.run(lambda: self.stage.create_poll(actor, poll_id, spec, self.now)) is None:
            return multiple()
        if open_now:
            self.run(lambda: self.stage.open_poll(actor, poll_id, self.now))
        return poll_id

    @rule(actor=MODS, poll_id=polls, close=st.booleans())
    def open_or_close_poll(self, actor: str, poll_id: str, close: bool) -> None:
        if close:
            self.run(lambda: self.stage.close_poll(actor, poll_id, self.now))
        else:
            self.run(lambda: self.stage.open_poll(actor, poll_id, self.now))

    @rule(actor=PIDS, poll_id=polls, choices=CHOICES)
    def vote(self, actor: str, poll_id: str, choices: list[int]) -> None:
        identity = self.identity(actor)
        if self.run(lambda: self.stage.vote(actor, poll_id, choices, self.now)) is not None:
            assert identity is not None
            ballots = self.ballots.setdefault(poll_id, {})
            assert identity not in ballots, "a second ballot was accepted"
            ballots[identity] = tuple(sorted(choices))

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def one_role_per_person_and_only_what_it_allows(self) -> None:
        stage = self.stage
        assert sum(p.role is Role.HOST for p in stage.participants.values()) <= 1
        assert stage.hands.queue() == tuple(p for p in stage.hands.raised if p in stage.participants)
        for pid, person in stage.participants.items():
            assert isinstance(person.role, Role)
            assert person.hand_raised == (pid in stage.hands)
            assert not person.hand_raised or person.role is Role.AUDIENCE
            assert stage.invitations.get(pid) is None or person.role is Role.AUDIENCE
            assert not person.publishing or allows(person.role, Permission.PUBLISH)
            assert not person.moderator_muted or person.role is Role.SPEAKER
            assert not person.chat_muted or not is_moderator(person.role)
            assert person.muted <= person.publishing
        assert set(stage.invitations.pending) <= set(stage.participants)
        assert len(stage.publishers) <= stage.max_publishers
        if stage.state is StageState.ENDED:
            assert not stage.publishers

    @invariant()
    def banned_identities_are_never_present(self) -> None:
        assert self.stage.banned_identities == self.banned
        assert not any(p.identity in self.banned for p in self.stage.participants.values())

    @invariant()
    def vote_counts_equal_ballots(self) -> None:
        for poll_id, poll in self.stage.polls.polls.items():
            cast = self.ballots.get(poll_id, {})
            assert {i: b.choices for i, b in poll.ballots.items()} == cast
            expected = [sum(i in choices for choices in cast.values()) for i in range(len(poll.spec.options))]
            assert list(poll.counts()) == expected
            assert poll.results().ballots == len(cast)
            assert poll.status is not PollStatus.DRAFT or not cast
            live = [e for e in self.stage.log.events if isinstance(e, PollCounts) and e.poll_id == poll_id]
            if live:
                assert list(live[-1].counts) == expected and live[-1].ballots == len(cast)

    @invariant()
    def deleted_comments_never_reappear(self) -> None:
        stage = self.stage
        assert not set(self.deleted) & set(stage.chat.comments)
        assert stage.chat.pinned is None or stage.chat.pinned.view.id not in self.deleted
        for pid in stage.participants:
            state = stage.snapshot_for(pid)
            assert not {c["id"] for c in state["comments"]} & set(self.deleted)  # type: ignore[attr-defined]
            pinned = state["pinned"]
            assert pinned is None or pinned["id"] not in self.deleted  # type: ignore[index]
        for event in stage.log.events:
            if isinstance(event, CommentPosted | CommentPinned) and event.comment is not None:
                deleted_at = self.deleted.get(event.comment.id)
                assert deleted_at is None or event.seq < deleted_at

    @invariant()
    def the_log_has_no_gaps(self) -> None:
        assert [e.seq for e in self.stage.log.events] == list(range(1, len(self.stage.log.events) + 1))
        assert self.stage.log.last_seq == len(self.stage.log.events)

    @invariant()
    def comment_history_is_bounded(self) -> None:
        assert len(self.stage.chat.comments) <= 2 * self.stage.settings.comment_history

    @invariant()
    def questions_and_rates_are_bounded(self) -> None:
        settings, questions = self.stage.settings, self.stage.questions.questions.values()
        open_ = [q.identity for q in questions if q.status == "open"]
        assert len(open_) <= settings.question_max_open and len(questions) <= 2 * settings.question_max_open
        assert all(open_.count(i) <= settings.question_max_per_person for i in open_)
        rules = self.stage.rates.rules
        assert all(len(times) <= rules[kind].count for (_, kind), times in self.stage.rates.recent.items())


StageMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_stage_machine = StageMachine.TestCase
