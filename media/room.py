"""The media side of one stage: who publishes what, who watches through which slot.

It knows nothing of sockets or roles (the server checks permissions with rooms/ first); it tells
the server which slot messages (``media.messages``) to send through ``notify(participant_id, message)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCSessionDescription

from media.errors import BadSdp, NoOffer
from media.messages import MediaMessage, SlotAssigned, SlotLayout, SlotReleased, SubscriberOffer
from media.peer import MediaConfig, new_peer_connection
from media.publication import Publication
from media.publisher import Publisher
from media.sdp import check_sdp_text
from media.subscriber import Subscriber
from media.tasks import OwnedTasks

log = logging.getLogger(__name__)

Notify = Callable[[str, MediaMessage], None]


class MediaRoom:
    def __init__(self, stage_id: str, config: MediaConfig, notify: Notify) -> None:
        self.stage_id = stage_id
        self.config = config
        self._notify = notify
        self.subscribers: dict[str, Subscriber] = {}
        self.publishers: dict[str, Publisher] = {}
        self._answer_pending: set[str] = set()
        self._tasks = OwnedTasks(log, "media", stage=stage_id)

    # --- subscribers -------------------------------------------------------------------------

    async def subscribe(self, participant_id: str) -> SubscriberOffer:
        """Create the participant's receiving connection; returns the offer message."""
        pc = new_peer_connection(self.config)
        sub = Subscriber(participant_id, pc, self.config.slots, self.config.resend)
        self.subscribers[participant_id] = sub

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected":
                self._tasks.spawn(self._on_subscriber_connected(sub))
            elif pc.connectionState in ("failed", "closed"):
                self._detach_all(sub)
                sub.close()

        # Assign what is already published before the offer exists, so the first assignments go
        # out right after it.
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        for pair in sub.pairs:
            pair.audio.mid = _mid_of(pc, pair.audio.sender)
            pair.video.mid = _mid_of(pc, pair.video.sender)
        self._answer_pending.add(participant_id)
        return SubscriberOffer(
            sdp=pc.localDescription.sdp,
            slots=[
                SlotLayout(slot=p.index, stream=p.stream, audio_mid=p.audio.mid, video_mid=p.video.mid)
                for p in sub.pairs
            ],
        )

    async def subscriber_answer(self, participant_id: str, sdp: str) -> None:
        sub = self.subscribers.get(participant_id)
        if sub is None or participant_id not in self._answer_pending:
            raise NoOffer("no subscriber offer is waiting for an answer")
        check_sdp_text(sdp)  # aiortc parses it (once) in setRemoteDescription
        try:
            await sub.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        except Exception as exc:
            raise BadSdp(f"the answer could not be applied: {exc}") from None
        self._answer_pending.discard(participant_id)
        for pubs in self._publications_by_participant():
            for pub in pubs:
                self._assign_to(sub, pub)

    async def _on_subscriber_connected(self, sub: Subscriber) -> None:
        # The SRTP session is set up a moment after the state flips; poll briefly for it.
        for _ in range(100):
            if sub.on_connected():
                break
            await asyncio.sleep(0.01)
        else:
            # A slot the browser rejected never gets send parameters: go on without it.
            if not sub.on_connected(require_all=False):
                log.warning("subscriber %s connected without a usable path", sub.participant_id)
                return
        for pair in sub.pairs:
            for slot in (pair.audio, pair.video):
                if slot.publication is not None and not slot.publication.closed:
                    slot.publication.attach(slot)

    def _detach_all(self, sub: Subscriber) -> None:
        for pair in sub.pairs:
            for slot in (pair.audio, pair.video):
                if slot.publication is not None:
                    slot.publication.detach(slot)

    # --- publishers --------------------------------------------------------------------------

    async def publish(self, participant_id: str, offer_sdp: str) -> str:
        """Answer a publisher's offer; the new tracks are assigned to every other subscriber."""
        if participant_id in self.publishers:
            await self.unpublish(participant_id)
        publisher = Publisher(participant_id, self.config, self._on_publisher_closed)
        try:
            answer = await publisher.answer(offer_sdp)
        except BaseException:
            await publisher.close()
            raise
        self.publishers[participant_id] = publisher
        for pub in publisher.publications.values():
            for sub in self.subscribers.values():
                self._assign_to(sub, pub)
        return answer

    def kinds_published(self, participant_id: str) -> tuple[str, ...]:
        publisher = self.publishers.get(participant_id)
        return tuple(sorted(publisher.publications)) if publisher else ()

    def set_muted(self, participant_id: str, kind: str, muted: bool) -> None:
        publisher = self.publishers.get(participant_id)
        if publisher is not None and kind in publisher.publications:
            publisher.publications[kind].set_paused(muted)

    async def unpublish(self, participant_id: str) -> None:
        publisher = self.publishers.pop(participant_id, None)
        if publisher is None:
            return
        for pub in publisher.publications.values():
            self._release(pub)
        await publisher.close()

    def _on_publisher_closed(self, publisher: Publisher) -> None:
        if self.publishers.get(publisher.participant_id) is publisher:
            self._tasks.spawn(self.unpublish(publisher.participant_id))

    # --- slots -------------------------------------------------------------------------------

    def _publications_by_participant(self) -> list[list[Publication]]:
        return [list(p.publications.values()) for p in self.publishers.values()]

    def _assign_to(self, sub: Subscriber, pub: Publication) -> None:
        if sub.participant_id == pub.participant_id or sub.participant_id in self._answer_pending:
            return
        pair = sub.pair_of(pub.participant_id) or sub.free_pair()
        if pair is None:
            log.warning("no free slot for %s at %s", pub.participant_id, sub.participant_id)
            return
        pair.participant_id = pub.participant_id
        slot = pair.slot(pub.kind)
        if slot.publication is pub:
            return
        slot.publication = pub
        self._notify(
            sub.participant_id,
            SlotAssigned(
                slot=pair.index,
                kind=slot.kind,
                mid=slot.mid,
                stream=pair.stream,
                participant_id=pub.participant_id,
            ),
        )
        if sub.connected:
            pub.attach(slot)

    def _release(self, pub: Publication) -> None:
        pub.close()
        for sub in self.subscribers.values():
            pair = sub.pair_of(pub.participant_id)
            if pair is None:
                continue
            slot = pair.slot(pub.kind)
            if slot.publication is not pub:
                continue
            slot.publication = None
            self._notify(
                sub.participant_id,
                SlotReleased(
                    slot=pair.index,
                    kind=slot.kind,
                    mid=slot.mid,
                    stream=pair.stream,
                    participant_id=pub.participant_id,
                ),
            )
            if pair.audio.publication is None and pair.video.publication is None:
                pair.participant_id = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def remove(self, participant_id: str) -> None:
        """Everything of a participant who left: their publications first, then their connection."""
        await self.unpublish(participant_id)
        self._answer_pending.discard(participant_id)
        sub = self.subscribers.pop(participant_id, None)
        if sub is not None:
            self._detach_all(sub)
            sub.close()
            await sub.pc.close()

    async def close(self) -> None:
        for participant_id in list(self.publishers) + list(self.subscribers):
            await self.remove(participant_id)
        await self._tasks.cancel_all()


def _mid_of(pc: Any, sender: Any) -> str | None:
    return next((t.mid for t in pc.getTransceivers() if t.sender is sender), None)

