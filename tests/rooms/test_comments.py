"""Comments (limits, slow mode, rate, deletion, pin, history) and reactions."""

from __future__ import annotations

import pytest

from rooms.errors import InvalidMessage, NotAllowed, NotFound, RateLimited, SlowMode
from rooms.events import CommentDeleted, CommentPinned, CommentPosted, CommentView, Reactions
from rooms.roles import Role
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, populated, refused, types


def test_a_comment_goes_to_everyone_with_its_author() -> None:
    stage = populated()
    (posted,) = stage.post_comment(ALICE, "c-1", "Which guideline?", 3.5)
    view = CommentView(id="c-1", author_id=ALICE, author_name="Alice", text="Which guideline?", at=3.5)
    assert posted == CommentPosted(stage="s1", at=3.5, seq=posted.seq, comment=view)
    assert posted.audience().everyone


@pytest.mark.parametrize("text", ["", "   ", "\n", "x" * 501])
def test_comment_text_is_one_to_the_limit_characters(text: str) -> None:
    stage = populated()
    refused(stage, InvalidMessage, lambda: stage.post_comment(ALICE, "c", text, 1))


def test_the_comment_limit_comes_from_the_settings() -> None:
    stage = populated(comment_max_chars=10)
    stage.post_comment(ALICE, "c1", "x" * 10, 1)
    refused(stage, InvalidMessage, lambda: stage.post_comment(ALICE, "c2", "x" * 11, 1))


def test_a_comment_id_is_never_reused() -> None:
    stage = populated()
    stage.post_comment(ALICE, "c1", "hi", 1)
    refused(stage, InvalidMessage, lambda: stage.post_comment(BOB, "c1", "again", 2))
    stage.delete_comment(ALICE, "c1", 3)
    refused(stage, InvalidMessage, lambda: stage.post_comment(BOB, "c1", "again", 4))


def test_slow_mode_spaces_each_persons_comments() -> None:
    stage = populated()
    (_audit, chat) = stage.set_slow_mode(MOD, 10, 0)
    assert types([chat]) == ["chat.updated"] and stage.snapshot_for(ALICE)["slow_mode_s"] == 10
    stage.post_comment(ALICE, "c1", "one", 1)
    error = refused(stage, SlowMode, lambda: stage.post_comment(ALICE, "c2", "two", 4))
    assert isinstance(error, SlowMode) and error.retry_after == pytest.approx(7)
    stage.post_comment(BOB, "c3", "Bob is not slowed by Alice", 4)
    stage.post_comment(ALICE, "c4", "two", 11)
    stage.set_slow_mode(HOST, 0, 12)
    stage.post_comment(ALICE, "c5", "three", 12)


def test_slow_mode_does_not_apply_to_moderators() -> None:
    stage = populated()
    stage.set_slow_mode(MOD, 60, 0)
    for i in range(3):
        stage.post_comment(MOD, f"m{i}", "note", 1 + i)


@pytest.mark.parametrize("seconds", [-1, 3601])
def test_slow_mode_is_zero_to_an_hour(seconds: int) -> None:
    stage = populated()
    refused(stage, InvalidMessage, lambda: stage.set_slow_mode(MOD, seconds, 1))


def test_the_rate_limit_is_a_sliding_window_per_person() -> None:
    stage = populated(comment_rate=3, comment_rate_window_s=10.0)
    for i, t in enumerate([0.0, 2.0, 4.0]):
        stage.post_comment(ALICE, f"a{i}", "hi", t)
    error = refused(stage, RateLimited, lambda: stage.post_comment(ALICE, "a3", "hi", 9.0))
    assert isinstance(error, RateLimited) and error.retry_after == pytest.approx(1.0)
    stage.post_comment(BOB, "b0", "someone else", 9.0)
    stage.post_comment(ALICE, "a3", "hi", 10.5)  # the comment at 0.0 left the window
    refused(stage, RateLimited, lambda: stage.post_comment(ALICE, "a4", "hi", 11.0))
    assert error.code == "rate_limited"


def test_the_rate_limit_follows_the_identity_across_rejoins() -> None:
    stage = populated(comment_rate=1)
    stage.join("c1", "Carol", Role.AUDIENCE, 0, identity="carol")
    stage.post_comment("c1", "x1", "hi", 1)
    stage.leave("c1", 2)
    stage.join("c2", "Carol", Role.AUDIENCE, 2, identity="carol")
    refused(stage, RateLimited, lambda: stage.post_comment("c2", "x2", "hi", 3))


def test_a_refused_comment_does_not_count_against_the_rate() -> None:
    stage = populated(comment_rate=2)
    stage.post_comment(ALICE, "a1", "hi", 0)
    refused(stage, InvalidMessage, lambda: stage.post_comment(ALICE, "a2", "", 1))
    stage.post_comment(ALICE, "a2", "hi", 1)


def test_the_author_deletes_their_comment_and_it_is_gone_for_everyone() -> None:
    stage = populated()
    stage.post_comment(ALICE, "c1", "oops", 1)
    stage.post_comment(BOB, "c2", "hello", 2)
    (deleted,) = stage.delete_comment(ALICE, "c1", 3)
    assert deleted == CommentDeleted(stage="s1", at=3, seq=deleted.seq, comment_id="c1", by=ALICE)
    assert [c["id"] for c in stage.snapshot_for(BOB)["comments"]] == ["c2"]  # type: ignore[attr-defined]
    refused(stage, NotFound, lambda: stage.delete_comment(ALICE, "c1", 4))


def test_the_author_is_the_identity_not_the_connection() -> None:
    stage = populated()
    stage.join("c1", "Carol", Role.AUDIENCE, 0, identity="carol")
    stage.post_comment("c1", "x", "hi", 1)
    stage.leave("c1", 2)
    stage.join("c2", "Carol", Role.AUDIENCE, 2, identity="carol")
    assert types(stage.delete_comment("c2", "x", 3)) == ["comment.deleted"]


def test_others_may_not_delete_a_comment_but_moderators_may() -> None:
    stage = populated()
    stage.post_comment(ALICE, "c1", "hi", 1)
    for pid in (BOB, SPEAKER):
        refused(stage, NotAllowed, stage.delete_comment, pid, "c1", 2)
    assert types(stage.delete_comment(MOD, "c1", 2)) == ["moderation.audit", "comment.deleted"]


def test_pinning_shows_the_comment_to_everyone_and_null_unpins() -> None:
    stage = populated()
    stage.post_comment(ALICE, "c1", "key point", 1)
    (_audit, pinned) = stage.pin_comment(MOD, "c1", 2)
    assert isinstance(pinned, CommentPinned) and pinned.comment is not None and pinned.comment.id == "c1"
    assert stage.snapshot_for(BOB)["pinned"] == {
        "id": "c1", "author_id": ALICE, "author_name": "Alice", "text": "key point", "at": 1
    }  # fmt: skip
    (_audit, unpinned) = stage.pin_comment(MOD, None, 3)
    assert isinstance(unpinned, CommentPinned) and unpinned.comment is None
    assert stage.snapshot_for(BOB)["pinned"] is None
    refused(stage, NotFound, lambda: stage.pin_comment(MOD, "nope", 4))


def test_deleting_the_pinned_comment_unpins_it() -> None:
    stage = populated()
    stage.post_comment(ALICE, "c1", "key point", 1)
    stage.pin_comment(MOD, "c1", 2)
    assert types(stage.delete_comment(ALICE, "c1", 3)) == ["comment.deleted", "comment.pinned"]
    assert stage.snapshot_for(HOST)["pinned"] is None
    refused(stage, NotFound, lambda: stage.pin_comment(MOD, "c1", 4))


def test_late_joiners_get_the_last_n_comments_that_are_not_deleted() -> None:
    stage = populated(comment_history=3, comment_rate=100)
    for i in range(6):
        stage.post_comment(ALICE, f"c{i}", f"#{i}", i)

    def ids() -> list[str]:
        return [c["id"] for c in stage.snapshot_for(BOB)["comments"]]  # type: ignore[attr-defined]

    assert ids() == ["c3", "c4", "c5"]
    stage.delete_comment(MOD, "c4", 10)
    assert ids() == ["c2", "c3", "c5"]


def test_an_old_pinned_comment_stays_pinned_and_deletable() -> None:
    stage = populated(comment_history=1, comment_rate=100)
    stage.post_comment(ALICE, "old", "pin me", 0)
    stage.pin_comment(MOD, "old", 1)
    for i in range(5):
        stage.post_comment(BOB, f"c{i}", "chatter", 2 + i)
    assert stage.snapshot_for(BOB)["pinned"]["id"] == "old"  # type: ignore[index]
    assert types(stage.delete_comment(ALICE, "old", 10)) == ["comment.deleted", "comment.pinned"]


# --- reactions ---------------------------------------------------------------------------------------


def test_reactions_are_counted_and_flushed_as_one_event() -> None:
    stage = populated()
    seq = stage.log.last_seq
    for pid, emoji in [(ALICE, "👏"), (BOB, "👏"), (MOD, "❤️"), (ALICE, "\u2764")]:
        assert stage.react(pid, emoji, 1) == []
    assert stage.log.last_seq == seq  # nothing logged until the flush
    (flushed,) = stage.flush_reactions(1.5)
    assert flushed == Reactions(stage="s1", at=1.5, seq=seq + 1, counts={"👏": 2, "❤️": 2})
    assert stage.flush_reactions(2.5) == []


def test_reactions_are_flushed_at_most_once_per_window() -> None:
    stage = populated(reaction_window_s=1.0)
    stage.react(ALICE, "👏", 0.0)
    assert types(stage.flush_reactions(0.25)) == ["reactions"]  # the first goes out at the next tick
    stage.react(ALICE, "👏", 0.3)
    assert stage.flush_reactions(0.5) == []  # within the window: still counting
    stage.react(BOB, "👏", 0.9)
    (flushed,) = stage.flush_reactions(1.25)
    assert isinstance(flushed, Reactions) and flushed.counts == {"👏": 2}
    assert stage.flush_reactions(5.0) == []  # nothing new


def test_only_the_listed_emoji_are_reactions() -> None:
    stage = populated()
    refused(stage, InvalidMessage, lambda: stage.react(ALICE, "💩", 1))
    refused(stage, InvalidMessage, lambda: stage.react(ALICE, "👏👏", 1))
