"""A participant's sending connection: the browser offers, we answer, each track becomes a Publication."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters

from media import aiortc_hooks as hooks
from media import figures, stats
from media.codecs import SUPPORTED
from media.errors import BadSdp, UnsupportedCodec
from media.peer import MediaConfig, new_peer_connection
from media.publication import Publication
from media.sdp import check_publish_offer
from media.tasks import OwnedTasks

log = logging.getLogger(__name__)


class Publisher:
    """Owns the publishing peer connection and the tasks it starts."""

    def __init__(
        self,
        participant_id: str,
        config: MediaConfig,
        on_closed: Callable[[Publisher], None],
    ) -> None:
        self.participant_id = participant_id
        self.config = config
        self.pc = new_peer_connection(config)
        self.publications: dict[str, Publication] = {}
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
        pc = self.pc

        @pc.on("track")
        def _track(track: Any) -> None:
            receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
            self._publish(track.kind, receiver)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise BadSdp(f"the offer could not be applied: {exc}") from None
        except Exception as exc:  # aiortc raises OperationError/InvalidStateError on bad offers
            raise BadSdp(f"the offer could not be applied: {exc}") from None
        for kind in summary.sending:
            if kind not in self.publications:
                raise UnsupportedCodec(f"no common {kind} codec")
        return pc.localDescription.sdp

    def _publish(self, kind: str, receiver: RTCRtpReceiver) -> None:
        state: dict[str, int | None] = {"ssrc": None}

        def send_pli() -> None:
            ssrc = state["ssrc"]
            if ssrc is not None:
                self._tasks.spawn(hooks.request_keyframe(receiver, ssrc))

        pub = Publication(
            self.participant_id,
            kind,
            request_keyframe=send_pli,
            loss_timeout=self.config.loss_timeout,
            pli_interval=self.config.pli_interval,
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

    def figures(self) -> figures.ConnectionDirection:
        """The up direction now (one sampler only: it closes a loss interval); a paused (muted)
        track is not expected to arrive."""
        paused = {kind for kind, pub in self.publications.items() if pub.paused}
        return figures.publisher(self.pc, self.uplink, paused)

    async def close(self) -> None:
        self._closed = True
        for pub in self.publications.values():
            pub.close()
        await self._tasks.cancel_all()
        await self.pc.close()
