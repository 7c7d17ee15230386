"""Comments: length limit, slow mode, deletion, pin, the late joiners' history and older pages of it.

(The per-person rate is the stage's, ``rooms/rates.py``.)

A "person" here is an identity, so leaving and rejoining neither resets the limits nor loses the right
to delete one's own comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from rooms.errors import ChatMuted, InvalidMessage, NotAllowed, NotFound, SlowMode
from rooms.events import CommentDeleted, CommentPinned, CommentPosted, Event
from rooms.settings import StageSettings
from rooms.text import require_text
from rooms.views import CommentView

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Author:
    """Who does something, as the chat needs to know them."""

    id: str
    name: str
    identity: str
    exempt: bool  # host and moderators: no chat mute, no slow mode
    chat_muted: bool = False


@dataclass(slots=True)
class _Comment:
    view: CommentView
    identity: str


@dataclass(slots=True)
class Chat:
    """The comment stream of one stage.

    It keeps the latest ``2 * comment_history`` comments (and the pinned one): enough for a late
    joiner to get the last ``comment_history`` even after deletions, without growing for ever.
    """

    stage_id: str
    settings: StageSettings
    comments: dict[str, _Comment] = field(default_factory=dict)  # oldest first
    deleted: set[str] = field(default_factory=set)  # ids never to be used again
    pinned: _Comment | None = None
    slow_mode_s: int = 0
    last_post: dict[str, float] = field(default_factory=dict)  # identity -> last accepted comment

    # --- commands ------------------------------------------------------------------------------

    def post(self, author: Author, comment_id: str, text: str, now: float) -> list[Event]:
        check_text(text, self.settings.comment_max_chars, "comment")
        if author.chat_muted and not author.exempt:
            raise ChatMuted("you are muted in the chat")
        last = self.last_post.get(author.identity)
        if self.slow_mode_s and not author.exempt and last is not None and now - last < self.slow_mode_s:
            raise SlowMode(f"slow mode: one comment per {self.slow_mode_s} s", last + self.slow_mode_s - now)
        if comment_id in self.deleted or self._find(comment_id) is not None:
            raise InvalidMessage(f"comment {comment_id} already exists")
        view = CommentView(id=comment_id, author_id=author.id, author_name=author.name, text=text, at=now)
        self.comments[comment_id] = _Comment(view, author.identity)
        self.last_post[author.identity] = now
        while len(self.comments) > 2 * self.settings.comment_history:
            del self.comments[next(iter(self.comments))]
        return [CommentPosted(stage=self.stage_id, at=now, comment=view)]

    def delete(self, actor: Author, comment_id: str, may_delete_any: bool, now: float) -> list[Event]:
        comment = self._find(comment_id)
        if comment is None:
            raise NotFound(f"no comment {comment_id}")
        if comment.identity != actor.identity and not may_delete_any:
            raise NotAllowed("only its author or a moderator may delete a comment")
        self.comments.pop(comment_id, None)
        self.deleted.add(comment_id)
        deleted = CommentDeleted(stage=self.stage_id, at=now, comment_id=comment_id, by=actor.id)
        events: list[Event] = [deleted]
        if self.pinned is comment:
            self.pinned = None
            events.append(CommentPinned(stage=self.stage_id, at=now, comment=None))
        return events

    def pin(self, comment_id: str | None, now: float) -> list[Event]:
        comment = None
        if comment_id is not None:
            comment = self._find(comment_id)
            if comment is None:
                raise NotFound(f"no comment {comment_id}")
        self.pinned = comment
        return [CommentPinned(stage=self.stage_id, at=now, comment=comment.view if comment else None)]

    def set_slow_mode(self, seconds: int) -> None:
        if not 0 <= seconds <= 3600:
            raise InvalidMessage("slow mode is 0 (off) to 3600 seconds")
        self.slow_mode_s = seconds

    def restore(
        self,
        comments: list[tuple[CommentView, str]],
        pinned: tuple[CommentView, str] | None,
        deleted: set[str],
        slow_mode_s: int,
    ) -> None:
        """Refill a new chat from a stage's durable state (``rooms/durable.py``): the comments with their
        authors' identities, oldest first, the pin, the ids never to reuse, and slow mode."""
        self.set_slow_mode(slow_mode_s)
        kept = comments[-2 * self.settings.comment_history :] if self.settings.comment_history else []
        self.comments = {view.id: _Comment(view, identity) for view, identity in kept}
        self.deleted = set(deleted)
        self.pinned = None
        if pinned is not None:  # the same object as in ``comments``, as ``delete`` compares them by identity
            view, identity = pinned
            self.pinned = self.comments.get(view.id) or _Comment(view, identity)

    def stored(self) -> list[tuple[CommentView, str]]:
        """Every comment kept, oldest first, with its author's identity (what ``restore`` takes)."""
        return [(c.view, c.identity) for c in self.comments.values()]

    # --- views ---------------------------------------------------------------------------------

    def history(self) -> list[CommentView]:
        """The last ``comment_history`` comments that are not deleted, oldest first."""
        views = [c.view for c in self.comments.values()]
        return views[-self.settings.comment_history :] if self.settings.comment_history else []

    def more(self) -> bool:
        """Whether older comments are kept than ``history`` returns (``page`` has them)."""
        return len(self.comments) > self.settings.comment_history

    def page(self, before: str | None, limit: int) -> tuple[list[CommentView], bool]:
        """Up to ``limit`` comments posted before ``before`` (None: the latest), oldest first, and
        whether older ones are kept."""
        comments, more = page(self.comments, before, limit, "comment")
        return [c.view for c in comments], more

    def pinned_view(self) -> CommentView | None:
        return self.pinned.view if self.pinned else None

    def _find(self, comment_id: str) -> _Comment | None:
        comment = self.comments.get(comment_id)
        if comment is None and self.pinned is not None and self.pinned.view.id == comment_id:
            comment = self.pinned
        return comment


def check_text(text: str, max_chars: int, what: str) -> None:
    """1 to ``max_chars`` characters, not only blanks, valid Unicode."""
    require_text(text, f"the {what}")
    if not text.strip():
        raise InvalidMessage(f"the {what} is empty")
    if len(text) > max_chars:
        raise InvalidMessage(f"the {what} is longer than {max_chars} characters")


def page(items: dict[str, _T], before: str | None, limit: int, what: str) -> tuple[list[_T], bool]:
    """A page of an insertion-ordered dict: up to ``limit`` values before the key ``before`` (None:
    the last ones), in order, and whether any come before them."""
    keys = list(items)
    end = len(keys)
    if before is not None:
        if before not in items:
            raise NotFound(f"no {what} {before} is kept on this stage")
        end = keys.index(before)
    start = max(0, end - limit)
    return [items[k] for k in keys[start:end]], start > 0
