"""Screen sharing: a speaker's (or the host's) screen, window or tab, published beside their camera.

Sharing is publishing (docs/protocol.md, "Media model"): whoever may publish may share, under the same
consent rule while recording and the same ``media`` rate. A share is its own publication: it takes a
slot pair of its own on every subscriber connection, so the stage's ``max_publishers`` slot pairs
count cameras and shares together. At most ``max_screen_shares`` people share at once (default 1); a
further share is refused with ``share_busy``. A moderator can stop anyone's share
(``moderation.stop_share``); going back to the audience, leaving, being removed or banned ends it too
(``StageBase._stop_media``).
"""

from __future__ import annotations

from rooms.errors import InvalidMessage, NotPublishing, ShareBusy, StageFull
from rooms.events import Event, PublishingStarted, ShareStopped
from rooms.participant import check_kind
from rooms.rates import RateClass
from rooms.roles import Permission
from rooms.speakers import Speakers

__all__ = ["Sharing"]


class Sharing(Speakers):
    """The screen share commands of ``rooms.stage.Stage``."""

    def check_may_share(self, participant_id: str, now: float | None = None) -> None:
        """The checks of ``start_sharing`` without the change (before costly media set-up); the rate
        (``media``) only with ``now``."""
        person = self.get(participant_id)
        self._check_may_publish(person, now, camera=False)
        if person.sharing:
            return  # a new offer replaces the share: it keeps its place
        if len(self.sharers) >= self.settings.max_screen_shares:
            limit = self.settings.max_screen_shares
            raise ShareBusy(
                f"stage {self.id} allows {limit} screen share{'s' if limit != 1 else ''} at a time"
                if limit
                else f"stage {self.id} does not allow screen sharing"
            )
        if self._pairs_in_use() >= self.max_publishers:
            raise StageFull(f"stage {self.id} already uses its {self.max_publishers} media slots")

    def start_sharing(self, participant_id: str, kinds: tuple[str, ...], now: float) -> list[Event]:
        """The share's publication is up: video, and audio if the browser gave a tab's sound."""
        for kind in kinds:
            check_kind(kind)
        if "video" not in kinds:
            raise InvalidMessage("a screen share sends video")
        self.check_may_share(participant_id, now)
        person = self.get(participant_id)
        person.sharing = set(kinds)
        person.share_muted &= person.sharing
        self.rates.spend(person.identity, RateClass.MEDIA, now)
        started = PublishingStarted(
            stage=self.id, at=now, participant=participant_id, kinds=tuple(sorted(kinds)), source="screen"
        )
        return self._emit([started])

    def stop_sharing(self, participant_id: str, now: float) -> list[Event]:
        """``publish.stop`` with ``source: "screen"`` (or the browser's own "stop sharing")."""
        person = self.get(participant_id)
        if not person.sharing:
            raise NotPublishing(f"{participant_id} is not sharing a screen")
        return self._emit([*self._stop_share(person, now), self._updated(person, now)])

    def set_share_muted(self, participant_id: str, kind: str, muted: bool, now: float) -> list[Event]:
        """``publish.mute`` with ``source: "screen"``: as the camera's own mute (unmuting is rated)."""
        check_kind(kind)
        person = self.get(participant_id)
        self._require_not_ended()
        if kind not in person.sharing:
            raise NotPublishing(f"{participant_id} does not share {kind}")
        if muted == (kind in person.share_muted):
            return []
        if muted:
            person.share_muted.add(kind)
            return self._emit([self._updated(person, now)])
        self.rates.check(person.identity, RateClass.MEDIA, now)
        person.share_muted.discard(kind)
        return self._spent(person.identity, RateClass.MEDIA, now, self._emit([self._updated(person, now)]))

    def moderator_stop_share(self, actor: str, target: str, now: float) -> list[Event]:
        """``moderation.stop_share``: the share ends at once; the sharer is told (``share.stopped``)."""
        me = self._moderator(actor, Permission.MODERATE, now)
        person = self.get(target)
        if not person.sharing:
            raise NotPublishing(f"{target} is not sharing a screen")
        events = [
            *self._stop_share(person, now),
            ShareStopped(stage=self.id, at=now, participant_id=target, by=me.id),
            self._updated(person, now),
        ]
        return self._audited(me, "moderation.stop_share", events, now, person=person)
