"""The media side of one stage: who publishes what, who watches through which slot.

It knows nothing of sockets or roles (the server checks permissions with rooms/ first); it tells
the server which slot messages (``media.messages``) to send through ``notify(participant_id, message)``.

Viewers' receiving connections live in this process (``LocalViewers``) or, with media workers, in a
worker process (``media/workers.py``): the room keeps the same bookkeeping of slots either way and
tells the viewer's side what each slot takes. When a worker dies, its viewers are ``lost``: the
server closes their sockets with a reconnect code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import RTCIceCandidate

from media.errors import NoOffer
from media.figures import ConnectionDirection
from media.messages import MediaMessage, SlotAssigned, SlotReleased, SubscriberOffer
from media.peer import MediaConfig
from media.publication import Publication
from media.publisher import Publisher
from media.tasks import OwnedTasks
from media.viewers import LocalViewers
from media.workers import WorkerPool

log = logging.getLogger(__name__)

Notify = Callable[[str, MediaMessage], None]


class IcePeer(Protocol):
    """Where a viewer's trickled ICE candidates go: its peer connection, here or in a worker."""

    async def addIceCandidate(self, candidate: RTCIceCandidate) -> None: ...


class ViewerSide(Protocol):
    """Where viewers' connections live (``LocalViewers`` or a ``WorkerLink``), by viewer key."""

    async def subscribe(self, key: Any) -> SubscriberOffer: ...
    async def answer(self, key: Any, sdp: str) -> None: ...
    def peer(self, key: Any) -> Any: ...
    def figures(self, key: Any) -> ConnectionDirection | None: ...
    def assign(self, key: Any, pair: int, pub: Any) -> None: ...
    def release(self, key: Any, pair: int, kind: str) -> None: ...
    def set_preference(self, key: Any, preference: str, participant_id: str | None) -> None: ...
    async def remove(self, key: Any) -> None: ...


@dataclass(slots=True)
class PairView:
    """A viewer's slot pair as the room books it: whose tracks it carries."""

    index: int
    stream: str
    audio_mid: str | None
    video_mid: str | None
    participant_id: str | None = None
    source: str = "camera"  # which of the participant's publishers: a share has a pair of its own
    audio: Publication | None = None
    video: Publication | None = None

    def get(self, kind: str) -> Publication | None:
        return self.audio if kind == "audio" else self.video

    def set(self, kind: str, pub: Publication | None) -> None:
        if kind == "audio":
            self.audio = pub
        else:
            self.video = pub

    def mid(self, kind: str) -> str | None:
        return self.audio_mid if kind == "audio" else self.video_mid


@dataclass(slots=True)
class Viewer:
    participant_id: str
    side: ViewerSide
    key: Any
    pairs: list[PairView] = field(default_factory=list)

    def pair_of(self, participant_id: str, source: str = "camera") -> PairView | None:
        return next(
            (p for p in self.pairs if p.participant_id == participant_id and p.source == source), None
        )

    def free_pair(self) -> PairView | None:
        return next((p for p in self.pairs if p.participant_id is None), None)


class MediaRoom:
    def __init__(
        self,
        stage_id: str,
        config: MediaConfig,
        notify: Notify,
        workers: WorkerPool | None = None,
        lost: Callable[[str], None] | None = None,
    ) -> None:
        self.stage_id = stage_id
        self.config = config
        self._notify = notify
        self._workers = workers
        self._lost = lost
        self.viewers: dict[str, Viewer] = {}
        self.publishers: dict[str, Publisher] = {}  # cameras
        self.shares: dict[str, Publisher] = {}  # screen shares, each on its own peer connection
        self._answer_pending: set[str] = set()
        self._tasks = OwnedTasks(log, "media", stage=stage_id)
        self._local = LocalViewers(config, stage=stage_id)

    # --- subscribers -------------------------------------------------------------------------

    async def subscribe(self, participant_id: str, *, in_process: bool = False) -> SubscriberOffer:
        """Create the participant's receiving connection; returns the offer message. ``in_process``:
        here even when there are media workers (for the people on stage, see the server)."""
        if participant_id in self.viewers:
            await self._drop_viewer(participant_id)
        side: ViewerSide
        key: Any
        placed = None
        if self._workers is not None and not in_process:
            placed = await self._workers.place(lambda: self._viewer_lost(participant_id))
            if placed is None:
                # No worker is live: the viewer is served here rather than refused (the stage goes
                # on; a node's process can carry an audience, only a smaller one).
                log.warning("no media worker is live: %s served in-process", participant_id)
        if placed is None:
            side, key = self._local, participant_id
        else:
            side, key = placed
        viewer = self.viewers[participant_id] = Viewer(participant_id, side, key)
        try:
            offer = await side.subscribe(key)
        except BaseException:
            if self.viewers.get(participant_id) is viewer:
                del self.viewers[participant_id]
            await side.remove(key)
            raise
        if self.viewers.get(participant_id) is not viewer:  # left while the offer was made
            await side.remove(key)
            raise NoOffer("the participant left")
        viewer.pairs = [PairView(s.slot, s.stream, s.audio_mid, s.video_mid) for s in offer.slots]
        self._answer_pending.add(participant_id)
        return offer

    async def subscriber_answer(self, participant_id: str, sdp: str) -> None:
        viewer = self.viewers.get(participant_id)
        if viewer is None or participant_id not in self._answer_pending:
            raise NoOffer("no subscriber offer is waiting for an answer")
        await viewer.side.answer(viewer.key, sdp)
        self._answer_pending.discard(participant_id)
        for pubs in self._publications_by_participant():
            for pub in pubs:
                self._assign_to(viewer, pub)

    def subscriber_peer(self, participant_id: str) -> IcePeer | None:
        """The viewer's receiving connection, for trickled ICE candidates (None if it has none)."""
        viewer = self.viewers.get(participant_id)
        return viewer.side.peer(viewer.key) if viewer is not None else None

    def figures(self, participant_id: str) -> tuple[ConnectionDirection | None, ConnectionDirection | None]:
        """The participant's (down, up) connection figures (media/figures.py): sampled now where this
        process holds the connection, as last reported by a media worker otherwise. One sampler only
        (the stage's quality monitor): each call closes a loss interval."""
        viewer = self.viewers.get(participant_id)
        publisher = self.publishers.get(participant_id)
        down = viewer.side.figures(viewer.key) if viewer is not None else None
        return down, publisher.figures() if publisher is not None else None

    def _viewer_lost(self, participant_id: str) -> None:
        """The worker holding this viewer's connection died: the server makes it reconnect."""
        log.warning("viewer %s lost its media worker", participant_id, extra={"stage": self.stage_id})
        if self._lost is not None:
            self._lost(participant_id)
        else:
            self._tasks.spawn(self._drop_viewer(participant_id))

    async def _drop_viewer(self, participant_id: str) -> None:
        self._answer_pending.discard(participant_id)
        viewer = self.viewers.pop(participant_id, None)
        if viewer is not None:
            await viewer.side.remove(viewer.key)

    # --- publishers --------------------------------------------------------------------------

    def _by_source(self, source: str) -> dict[str, Publisher]:
        return self.shares if source == "screen" else self.publishers

    async def publish(self, participant_id: str, offer_sdp: str, source: str = "camera") -> str:
        """Answer a publisher's offer; the new tracks are assigned to every other subscriber.
        ``source`` "screen": a screen share, on a publisher connection and a slot pair of its own."""
        publishers = self._by_source(source)
        if participant_id in publishers:
            await self.unpublish(participant_id, source)
        publisher = Publisher(participant_id, self.config, self._on_publisher_closed, source)
        try:
            answer = await publisher.answer(offer_sdp)
        except BaseException:
            await publisher.close()
            raise
        publishers[participant_id] = publisher
        for pub in publisher.publications.values():
            for viewer in self.viewers.values():
                self._assign_to(viewer, pub)
        return answer

    def set_preference(self, participant_id: str, preference: str, speaker: str | None = None) -> bool:
        """The viewer's layer preference ("auto", "high", "low", "audio"), for every speaker or for
        ``speaker`` only (media/bwe.py ``Preference``). False: the participant has no receiving
        connection."""
        viewer = self.viewers.get(participant_id)
        if viewer is None:
            return False
        viewer.side.set_preference(viewer.key, preference, speaker)
        return True

    def kinds_published(self, participant_id: str, source: str = "camera") -> tuple[str, ...]:
        publisher = self._by_source(source).get(participant_id)
        return tuple(sorted(publisher.publications)) if publisher else ()

    def set_muted(self, participant_id: str, kind: str, muted: bool, source: str = "camera") -> None:
        publisher = self._by_source(source).get(participant_id)
        if publisher is not None:
            for pub in publisher.layers(kind):  # a simulcast video: every encoding
                pub.set_paused(muted)

    async def unpublish(self, participant_id: str, source: str = "camera") -> None:
        publisher = self._by_source(source).pop(participant_id, None)
        if publisher is None:
            return
        for pub in publisher.publications.values():
            self._release(pub)
        await publisher.close()

    def _on_publisher_closed(self, publisher: Publisher) -> None:
        if self._by_source(publisher.source).get(publisher.participant_id) is publisher:
            self._tasks.spawn(self.unpublish(publisher.participant_id, publisher.source))

    # --- slots -------------------------------------------------------------------------------

    def _publications_by_participant(self) -> list[list[Publication]]:
        publishers = [*self.publishers.values(), *self.shares.values()]
        return [list(p.publications.values()) for p in publishers]

    def _assign_to(self, viewer: Viewer, pub: Publication) -> None:
        pid = viewer.participant_id
        if pid == pub.participant_id or pid in self._answer_pending:
            return
        pair = viewer.pair_of(pub.participant_id, pub.source) or viewer.free_pair()
        if pair is None:
            log.warning("no free slot for %s at %s", pub.participant_id, pid)
            return
        pair.participant_id = pub.participant_id
        pair.source = pub.source
        if pair.get(pub.kind) is pub:
            return
        pair.set(pub.kind, pub)
        self._notify(
            pid,
            SlotAssigned(
                slot=pair.index,
                kind=pub.kind,
                mid=pair.mid(pub.kind),
                stream=pair.stream,
                participant_id=pub.participant_id,
                source=pub.source,
            ),
        )
        viewer.side.assign(viewer.key, pair.index, pub)

    def _release(self, pub: Publication) -> None:
        pub.close()
        for viewer in self.viewers.values():
            pair = viewer.pair_of(pub.participant_id, pub.source)
            if pair is None or pair.get(pub.kind) is not pub:
                continue
            pair.set(pub.kind, None)
            viewer.side.release(viewer.key, pair.index, pub.kind)
            self._notify(
                viewer.participant_id,
                SlotReleased(
                    slot=pair.index,
                    kind=pub.kind,
                    mid=pair.mid(pub.kind),
                    stream=pair.stream,
                    participant_id=pub.participant_id,
                    source=pub.source,
                ),
            )
            if pair.audio is None and pair.video is None:
                pair.participant_id = None
                pair.source = "camera"

    # --- lifecycle ---------------------------------------------------------------------------

    async def remove(self, participant_id: str) -> None:
        """Everything of a participant who left: their publications first, then their connection."""
        await self.unpublish(participant_id, "screen")
        await self.unpublish(participant_id)
        await self._drop_viewer(participant_id)

    async def close(self) -> None:
        for participant_id in list(self.publishers) + list(self.shares) + list(self.viewers):
            await self.remove(participant_id)
        await self._local.close()
        await self._tasks.cancel_all()
