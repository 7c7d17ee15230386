"""Viewers' receiving connections held in this process: the ``Subscriber`` objects, their offers and
answers, and which forwarded track (a ``Fanout``) each slot takes.

The same class serves a node without media workers (``MediaRoom`` attaches its ``Publication``s
directly) and a media worker (``media/worker.py`` attaches its mirrors of them), so a viewer is served
by the same code in either place. Viewers are known by a key (the participant id in-process, a
viewer id in a worker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCIceCandidate, RTCSessionDescription

from media import figures, twcc
from media.errors import BadSdp, NoOffer
from media.messages import SlotLayout, SubscriberOffer
from media.peer import MediaConfig, new_peer_connection
from media.publication import Fanout
from media.sdp import check_sdp_text
from media.subscriber import Subscriber
from media.tasks import OwnedTasks

log = logging.getLogger(__name__)


class LocalViewers:
    """Subscribers of this process. ``on_state(key, "connected" | "failed")`` reports their ICE/DTLS."""

    def __init__(
        self, config: MediaConfig, on_state: Callable[[Any, str], None] | None = None, **context: Any
    ) -> None:
        self.config = config
        self.subscribers: dict[Any, Subscriber] = {}
        self._on_state = on_state
        self._tasks = OwnedTasks(log, "viewers", **context)

    async def subscribe(self, key: Any) -> SubscriberOffer:
        """Create the viewer's receiving connection; returns its offer."""
        pc = new_peer_connection(self.config)
        sub = Subscriber(str(key), pc, self.config.slots, self.config.resend)
        self.subscribers[key] = sub

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected":
                self._tasks.spawn(self._on_connected(key, sub))
            elif pc.connectionState in ("failed", "closed"):
                self._detach_all(sub)
                sub.close()
                if pc.connectionState == "failed" and self._on_state is not None:
                    self._on_state(key, "failed")

        offer = await pc.createOffer()
        if self.config.probe_feedback:
            # Transport feedback for the probes' padding (media/twcc.py); aiortc keeps the lines it
            # parses from the offer we set, and ignores what it does not know for its own senders.
            offer = RTCSessionDescription(twcc.add_to_offer(offer.sdp), offer.type)
        await pc.setLocalDescription(offer)
        for pair in sub.pairs:
            pair.audio.mid = _mid_of(pc, pair.audio.sender)
            pair.video.mid = _mid_of(pc, pair.video.sender)
        return SubscriberOffer(
            sdp=pc.localDescription.sdp,
            slots=[
                SlotLayout(slot=p.index, stream=p.stream, audio_mid=p.audio.mid, video_mid=p.video.mid)
                for p in sub.pairs
            ],
        )

    async def answer(self, key: Any, sdp: str) -> None:
        sub = self.subscribers.get(key)
        if sub is None:
            raise NoOffer("no subscriber offer is waiting for an answer")
        check_sdp_text(sdp)  # aiortc parses it (once) in setRemoteDescription
        try:
            await sub.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        except Exception as exc:
            raise BadSdp(f"the answer could not be applied: {exc}") from None
        if self.config.probe_feedback and twcc.accepted(sdp):
            sub.probe_delay = twcc.ProbeDelay()
            sub.layers.delay_signal()

    def figures(self, key: Any) -> figures.ConnectionDirection | None:
        """The viewer's figures now, once connected (feeds its meters: one sampler only)."""
        sub = self.subscribers.get(key)
        if sub is None or not sub.connected or sub.closed:
            return None
        return figures.viewer(sub)

    def peer(self, key: Any) -> Any:
        """The viewer's peer connection (trickled ICE candidates go there), or None."""
        sub = self.subscribers.get(key)
        return sub.pc if sub is not None else None

    async def add_candidate(self, key: Any, candidate: RTCIceCandidate) -> None:
        sub = self.subscribers.get(key)
        if sub is None:
            raise ValueError("no subscriber connection")
        await sub.pc.addIceCandidate(candidate)

    async def _on_connected(self, key: Any, sub: Subscriber) -> None:
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
                if slot.publication is not None and not slot.publication.closed and not slot.held:
                    slot.publication.attach(slot)
        if self._on_state is not None:
            self._on_state(key, "connected")

    def _detach_all(self, sub: Subscriber) -> None:
        for pair in sub.pairs:
            for slot in (pair.audio, pair.video):
                if slot.publication is not None:
                    slot.publication.detach(slot)
                    if slot.publication.group is not None:
                        slot.publication.group.forget(slot)

    # --- slots -------------------------------------------------------------------------------

    def assign(self, key: Any, pair_index: int, fanout: Fanout) -> None:
        """The viewer's pair ``pair_index`` takes ``fanout`` (from its next keyframe once connected)."""
        sub = self.subscribers.get(key)
        if sub is None:
            return
        slot = sub.pairs[pair_index].slot(fanout.kind)
        if slot.publication is fanout:
            return
        group = fanout.group
        if group is not None and group.layered:  # simulcast: the slot takes one layer of the group
            if slot.publication is not None and slot.publication.group is group:
                return
            fanout = group.place(slot, time.monotonic())
        if slot.publication is not None:
            self._unset(slot)
        slot.publication = fanout
        slot.held = fanout.kind == "video" and not sub.layers.wants_video(fanout.participant_id)
        if sub.connected and not slot.held:
            fanout.attach(slot)

    def set_preference(self, key: Any, preference: str, participant_id: str | None = None) -> None:
        """The viewer's layer preference (``layer.set``), for every speaker or for one. "audio" holds
        the video slots back (nothing is forwarded to them; audio goes on); any other resumes them
        at the video's next keyframe. High and low are the layer decision's (media/bwe.py)."""
        sub = self.subscribers.get(key)
        if sub is None:
            return
        sub.layers.set_preference(preference, participant_id)
        for pair in sub.pairs:
            slot, fanout = pair.video, pair.video.publication
            if fanout is None:
                continue
            held = not sub.layers.wants_video(fanout.participant_id)
            if held == slot.held:
                continue
            slot.held = held
            if held:
                if slot in fanout.active:  # remember where the slot's sequence and timestamp lines are
                    slot.stop()
                fanout.detach(slot)
                if fanout.group is not None:
                    # A layer switch it was waiting for would start it at that layer's keyframe.
                    fanout.group.cancel_switch(slot)
            elif sub.connected and not fanout.closed:
                fanout.attach(slot)  # from its next keyframe, asked for now

    def release(self, key: Any, pair_index: int, kind: str) -> None:
        sub = self.subscribers.get(key)
        if sub is not None:
            self._unset(sub.pairs[pair_index].slot(kind))

    @staticmethod
    def _unset(slot: Any) -> None:
        fanout = slot.publication
        if fanout is None:
            return
        if slot in fanout.active:  # remember where the slot's sequence and timestamp lines are
            slot.stop()
        fanout.detach(slot)
        if fanout.group is not None:
            fanout.group.forget(slot)  # and a layer switch it was waiting for
        slot.publication = None

    async def remove(self, key: Any) -> None:
        sub = self.subscribers.pop(key, None)
        if sub is not None:
            self._detach_all(sub)
            sub.close()
            await sub.pc.close()

    async def close(self) -> None:
        for key in list(self.subscribers):
            await self.remove(key)
        await self._tasks.cancel_all()


def _mid_of(pc: Any, sender: Any) -> str | None:
    return next((t.mid for t in pc.getTransceivers() if t.sender is sender), None)
