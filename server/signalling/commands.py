"""Stage commands: one line per message type, each a call into ``rooms.Stage`` made through the
stage's owner (``LiveStage.apply``).

The shell makes the ids (comments, questions, polls) and passes the time; the domain decides
everything else. A handler returns the events and the extra fields of the ``ok`` reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rooms.errors import NotAllowed
from rooms.events import Event
from rooms.polls import PollSpec
from rooms.roles import Role
from rooms.stage import Stage
from server import wire
from server.host.live import LiveStage

Result = tuple[list[Event], dict[str, Any]]
Handler = Callable[[LiveStage, str, Any, float], Result]


def _plain(call: Callable[[LiveStage, str, Any, float], list[Event]]) -> Handler:
    return lambda live, pid, m, now: (call(live, pid, m, now), {})


def _post_comment(live: LiveStage, pid: str, m: wire.CommentPost, now: float) -> Result:
    comment_id = live.next_id("c")
    return live.stage.post_comment(pid, comment_id, m.text, now), {"comment_id": comment_id}


def _ask(live: LiveStage, pid: str, m: wire.QuestionAsk, now: float) -> Result:
    question_id = live.next_id("q")
    return live.stage.ask_question(pid, question_id, m.text, now), {"question_id": question_id}


def _create_poll(live: LiveStage, pid: str, m: wire.PollCreate, now: float) -> Result:
    poll_id = live.next_id("poll")
    spec = PollSpec(
        question=m.question,
        options=tuple(m.options),
        multiple=m.multiple,
        anonymous=m.anonymous,
        duration_s=m.duration_s,
        public_results=m.public_results,
        quiz=m.quiz,
        correct=tuple(m.correct),
    )
    return live.stage.create_poll(pid, poll_id, spec, now), {"poll_id": poll_id}


def _give_consent(live: LiveStage, pid: str, m: wire.ConsentGive, now: float) -> Result:
    if m.participant_id is not None and m.participant_id != pid:
        raise NotAllowed("a consent record is always about its sender: nobody consents for another")
    record_id = live.next_id("consent")
    events = live.stage.give_consent(pid, frozenset(m.scopes), m.policy_version, m.method, now, record_id)
    return events, {"record_id": record_id}


def _withdraw_consent(live: LiveStage, pid: str, m: wire.ConsentWithdraw, now: float) -> Result:
    record_id = live.next_id("consent")
    return live.stage.withdraw_consent(pid, now, record_id), {"record_id": record_id}


def _start_recording(live: LiveStage, pid: str, m: wire.RecordingStart, now: float) -> Result:
    session_id = live.new_session_id(now)
    return live.stage.start_recording(pid, session_id, now), {"session_id": session_id}


HANDLERS: dict[type[wire.StageCommand], Handler] = {
    wire.StageStart: _plain(lambda live, pid, m, now: live.stage.start(pid, now)),
    wire.StageEnd: _plain(lambda live, pid, m, now: live.stage.end(pid, now)),
    wire.StageLock: _plain(lambda live, pid, m, now: live.stage.lock(pid, m.locked, now)),
    wire.RoleSet: _plain(
        lambda live, pid, m, now: live.stage.set_role(pid, m.participant_id, Role(m.role), now)
    ),
    wire.HandRaise: _plain(lambda live, pid, m, now: live.stage.raise_hand(pid, now)),
    wire.HandLower: _plain(lambda live, pid, m, now: live.stage.lower_hand(pid, m.participant_id, now)),
    wire.SpeakerInvite: _plain(lambda live, pid, m, now: live.stage.invite(pid, m.participant_id, now)),
    wire.InvitationAccept: _plain(lambda live, pid, m, now: live.stage.accept_invitation(pid, now)),
    wire.InvitationDecline: _plain(lambda live, pid, m, now: live.stage.decline_invitation(pid, now)),
    wire.SpeakerDemote: _plain(
        lambda live, pid, m, now: live.stage.move_to_audience(pid, m.participant_id, now)
    ),
    wire.ModerationMute: _plain(
        lambda live, pid, m, now: live.stage.moderator_mute(pid, m.participant_id, m.kind, m.muted, now)
    ),
    wire.ModerationStopShare: _plain(
        lambda live, pid, m, now: live.stage.moderator_stop_share(pid, m.participant_id, now)
    ),
    wire.ModerationRemove: _plain(
        lambda live, pid, m, now: live.stage.remove(pid, m.participant_id, m.reason, now)
    ),
    wire.ModerationBan: _plain(
        lambda live, pid, m, now: live.stage.ban(pid, m.participant_id, m.reason, now)
    ),
    wire.ChatMute: _plain(
        lambda live, pid, m, now: live.stage.chat_mute(pid, m.participant_id, m.muted, now)
    ),
    wire.ChatSlowMode: _plain(lambda live, pid, m, now: live.stage.set_slow_mode(pid, m.seconds, now)),
    wire.CommentPost: _post_comment,
    wire.CommentDelete: _plain(lambda live, pid, m, now: live.stage.delete_comment(pid, m.comment_id, now)),
    wire.CommentPin: _plain(lambda live, pid, m, now: live.stage.pin_comment(pid, m.comment_id, now)),
    wire.ReactionSend: _plain(lambda live, pid, m, now: live.stage.react(pid, m.emoji, now)),
    wire.QuestionAsk: _ask,
    wire.QuestionUpvote: _plain(
        lambda live, pid, m, now: live.stage.upvote_question(pid, m.question_id, now)
    ),
    wire.QuestionAnswer: _plain(
        lambda live, pid, m, now: live.stage.answer_question(pid, m.question_id, now)
    ),
    wire.QuestionDismiss: _plain(
        lambda live, pid, m, now: live.stage.dismiss_question(pid, m.question_id, now)
    ),
    wire.PollCreate: _create_poll,
    wire.PollOpen: _plain(lambda live, pid, m, now: live.stage.open_poll(pid, m.poll_id, now)),
    wire.PollClose: _plain(lambda live, pid, m, now: live.stage.close_poll(pid, m.poll_id, now)),
    wire.ConsentGive: _give_consent,
    wire.ConsentWithdraw: _withdraw_consent,
    wire.RecordingStart: _start_recording,
    wire.RecordingStop: _plain(lambda live, pid, m, now: live.stage.stop_recording(pid, now)),
    wire.PollVote: _plain(lambda live, pid, m, now: live.stage.vote(pid, m.poll_id, list(m.choices), now)),
}


def run(
    live: LiveStage,
    participant_id: str,
    request: wire.StageCommand,
    accepted: Callable[[dict[str, Any]], None],
) -> list[Event]:
    """Apply the command through the stage's owner; ``accepted(extra)`` runs once the domain took it,
    before its events leave (the ``ok`` reply goes first)."""
    handler = HANDLERS[type(request)]
    extra: dict[str, Any] = {}

    def change(stage: Stage, now: float) -> list[Event]:
        events, more = handler(live, participant_id, request, now)
        extra.update(more)
        return events

    return live.apply(change, lambda events: accepted(extra))
