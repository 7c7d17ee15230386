"""A participant's sending connection: the browser offers, we answer, each track becomes a Publication."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters

from media import aiortc_hooks as hooks
from media import figures, simulcast_hooks, stats
from media.codecs import SUPPORTED
from media.errors import BadSdp, UnsupportedCodec
from media.layergroup import EVALUATE_S, LayerGroup
from media.peer import MediaConfig, new_peer_connection
from media.publication import Publication
from media.sdp import check_publish_offer
from media.simulcast import SimulcastOffer, munge_answer, parse_offer
from media.tasks import OwnedTasks

log = logging.getLogger(__name__)


class Publisher:
    """Owns the publishing peer connection and the tasks it starts."""

    def __init__(
        self,
        participant_id: str,
        config: MediaConfig,
        on_closed: Callable[[Publisher], None],
        source: str = "camera",
    ) -> None:
        self.participant_id = participant_id
        self.source = source  # "camera", or "screen": a screen share on its own connection
        self.config = config
        self.pc = new_peer_connection(config)
        self.publications: dict[str, Publication] = {}
        # Video as layers (media/layergroup.py): a simulcast video's encodings, lowest first; its
        # highest is ``publications["video"]`` (what the room assigns); a single encoding is a group
        # of one (its temporal layers).
        self.groups: dict[str, LayerGroup] = {}
        self.uplink: dict[str, figures.UpTrack] = {}  # what arrives of each track (media/figures.py)
        self._on_closed = on_closed
        self._tasks = OwnedTasks(log, "publisher", participant=participant_id)
        self._closed = False

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState in ("failed", "closed") and not self._closed:
                self._on_closed(self)

    async def answer(self, offer_sdp: str) -> str:
        """Validate and answer the offer; raises a MediaError (nothing is kept) on bad input."""
        summary = check_publish_offer(offer_sdp)
        layered = parse_offer(offer_sdp)
        pc = self.pc

        @pc.on("track")
        def _track(track: Any) -> None:
            receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
            if track.kind == "video" and layered is not None:
                self._publish_simulcast(receiver, layered)
            else:
                self._publish(track.kind, receiver)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            if layered is not None:
                for transceiver in pc.getTransceivers():
                    if transceiver.kind == "video":
                        simulcast_hooks.negotiate_rid_extensions(transceiver, layered.extensions)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise BadSdp(f"the offer could not be applied: {exc}") from None
        except Exception as exc:  # aiortc raises OperationError/InvalidStateError on bad offers
            raise BadSdp(f"the offer could not be applied: {exc}") from None
        for kind in summary.sending:
            if kind not in self.publications:
                raise UnsupportedCodec(f"no common {kind} codec")
        if layered is not None:
            return munge_answer(pc.localDescription.sdp, layered)
        return pc.localDescription.sdp

    def layers(self, kind: str) -> list[Publication]:
        """Every publication of ``kind``: a simulcast video's encodings, else the one track."""
        group = self.groups.get(kind)
        if group is not None:
            return [p for p in group.layers if isinstance(p, Publication)]
        pub = self.publications.get(kind)
        return [pub] if pub is not None else []

    def _publish(self, kind: str, receiver: RTCRtpReceiver) -> None:
        state: dict[str, int | None] = {"ssrc": None}

        def send_pli() -> None:
            ssrc = state["ssrc"]
            if ssrc is not None:  # (before the first packet: asked for when it comes)
                stats.keyframe_requests_upstream += 1
                self._tasks.spawn(hooks.request_keyframe(receiver, ssrc))

        pub = Publication(
            self.participant_id,
            kind,
            request_keyframe=send_pli,
            loss_timeout=self.config.loss_timeout,
            pli_interval=self.config.pli_interval,
            source=self.source,
        )
        on_packet = pub.on_packet
        up = self.uplink[kind] = figures.UpTrack(kind)
        arrived = up.arrivals.add
        clock = time.monotonic

        def sink(packet: Any) -> bool:
            stats.rtp_packets_received += 1
            arrived(packet.sequence_number, packet.timestamp, len(packet.payload), clock())
            if state["ssrc"] is None:
                state["ssrc"] = packet.ssrc
                if pub.assembler.is_video and pub.keyframes.pending:
                    send_pli()
            return on_packet(packet)

        def on_parameters(parameters: RTCRtpReceiveParameters) -> None:
            up.on_parameters(parameters)
            primary = parameters.codecs[0].mimeType.lower() if parameters.codecs else ""
            if primary in SUPPORTED:
                pub.mime = primary
                pub.fmtp = dict(parameters.codecs[0].parameters)
                pub.clock_rate = parameters.codecs[0].clockRate
            else:
                log.warning("unsupported codec %s from %s", primary, self.participant_id)

        hooks.install_packet_sink(receiver, sink, on_parameters)
        self.publications[kind] = pub
        if kind == "video":  # a group of one: its temporal layers, if it sends some (media/temporal.py)
            group = self.groups[kind] = LayerGroup(self.participant_id, [pub])
            self._tasks.spawn(self._evaluate_layers(group))

    def _publish_simulcast(self, receiver: RTCRtpReceiver, offer: SimulcastOffer) -> None:
        """One Publication per encoding (``rid``, ``layer``), fed by SSRC from one aiortc receiver."""
        pubs: dict[str, Publication] = {}
        ssrcs: dict[Publication, int] = {}
        by_ssrc: dict[int, Callable[[Any], bool]] = {}

        for rid in offer.layers:

            def send_pli(rid: str = rid) -> None:
                ssrc = ssrcs.get(pubs[rid])
                if ssrc is not None:  # an encoding the browser does not send yet: asked for when it comes
                    stats.keyframe_requests_upstream += 1
                    self._tasks.spawn(hooks.request_keyframe(receiver, ssrc))

            pub = Publication(
                self.participant_id,
                "video",
                request_keyframe=send_pli,
                loss_timeout=self.config.loss_timeout,
                pli_interval=self.config.pli_interval,
                source=self.source,
            )
            pub.rid = rid
            pubs[rid] = pub

        # Connection figures per encoding (each its own SSRC and sequence space).
        ups = {rid: figures.UpTrack("video") for rid in offer.layers}
        for rid, up in ups.items():
            self.uplink[f"video/{rid}"] = up
        arrivals: dict[int, Callable[[int, int, int, float], None]] = {}
        clock = time.monotonic

        def on_ssrc(rid: str, ssrc: int) -> None:
            pub = pubs[rid]
            ssrcs[pub] = ssrc
            by_ssrc[ssrc] = pub.on_packet
            arrivals[ssrc] = ups[rid].arrivals.add
            if pub.keyframes.pending:
                pub._send_pli()

        def sink(packet: Any) -> bool:
            stats.rtp_packets_received += 1
            on_packet = by_ssrc.get(packet.ssrc)
            if on_packet is None:
                return False
            arrivals[packet.ssrc](packet.sequence_number, packet.timestamp, len(packet.payload), clock())
            return on_packet(packet)

        def on_parameters(parameters: RTCRtpReceiveParameters) -> None:
            for up in ups.values():
                up.on_parameters(parameters)
            primary = parameters.codecs[0].mimeType.lower() if parameters.codecs else ""
            if primary not in SUPPORTED:
                log.warning("unsupported codec %s from %s", primary, self.participant_id)
                return
            for pub in pubs.values():
                pub.mime = primary
                pub.fmtp = dict(parameters.codecs[0].parameters)
                pub.clock_rate = parameters.codecs[0].clockRate

        simulcast_hooks.route_encodings(receiver, offer.layers, on_ssrc)
        hooks.install_packet_sink(receiver, sink, on_parameters)
        layers = [pubs[rid] for rid in offer.layers]
        group = self.groups["video"] = LayerGroup(self.participant_id, list(layers))
        self.publications["video"] = layers[-1]
        self._tasks.spawn(self._evaluate_layers(group))

    async def _evaluate_layers(self, group: LayerGroup) -> None:
        """Each viewer's layer choice, re-run a few times a second (media/layerchoice.py)."""
        while not self._closed:
            await asyncio.sleep(EVALUATE_S)
            try:
                group.evaluate(time.monotonic())
            except Exception:  # one bad evaluation must not end switching for good
                log.exception("layer evaluation failed", extra={"participant": self.participant_id})

    def figures(self) -> figures.ConnectionDirection:
        """The up direction now (one sampler only: it closes a loss interval); a paused (muted)
        track is not expected to arrive."""
        paused = {kind for kind, pub in self.publications.items() if pub.paused}
        return figures.publisher(self.pc, self.uplink, paused)

    async def close(self) -> None:
        self._closed = True
        for kind in list(self.publications):
            for pub in self.layers(kind):
                pub.close()
        for group in self.groups.values():
            group.close()
        await self._tasks.cancel_all()
        await self.pc.close()
