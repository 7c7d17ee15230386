"""One file per participant per track: encoded frames remuxed into WebM or Matroska, never decoded.

VP8 and Opus go into WebM, H264 into Matroska (``.mkv``: WebM allows no H264). The muxer runs in live mode
(nothing is ever rewritten in place) with clusters of at most ``cluster_ms`` and the output flushed after
every packet, so a cluster reaches the disk the moment it closes: after a SIGKILL the file is readable up
to the last closed cluster. Live mode also caps a cluster at 32 KiB (≈ 0.25 s of 1 Mbit/s video) and
starts one at every video keyframe; for 48 kbit/s Opus only the time limit applies. A cluster closes when
a packet is more than ``cluster_ms`` past its start, so with the 1000 ms of the research notes an audio file
lagged the writer by 0.98 s at a SIGKILL (up to ≈ 1.04 s by that rule); 500 ms keeps it at ≤ 0.5 s.
:func:`recording.repair.finalize` (called by :meth:`TrackWriter.close`) adds the duration and the cues
afterwards; ``python -m recording repair`` does the same after a crash.

Sealed (issue 15): given its publisher's ``key``, a writer writes ``{stem}.webm.sealed`` (or
``.mkv.sealed``) instead: the muxer writes into a :class:`recording.sealed.SealedWriter`, flushed after
every packet, so each cluster is sealed as one chunk the moment the muxer hands it over and a crash
loses no more than with a plain file. Finalizing decrypts, remuxes and seals again with the same key.

Threading: each writer owns one thread and a bounded queue. ``write()`` runs on the media path and only
appends to a deque (no lock, no syscall, no wake-up: the thread polls every 20 ms); the thread muxes.
One thread per writer rather than one shared by all: a write that stalls or fails (slow or full disk)
then holds up only its own track, and closing one writer never waits for another's backlog. A stage
records at most two tracks per slot (``media_slots``, 6 by default), so a dozen mostly idle threads.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.container import OutputContainer
from av.stream import Stream

from recording import stats as recording_stats
from recording.keys import PersonKey
from recording.repair import FinalizeResult, marker_path
from recording.repair import finalize as finalize_file
from recording.sealed import SUFFIX as SEALED_SUFFIX
from recording.sealed import SealedWriter
from recording.vault import KeyRing

log = logging.getLogger(__name__)

CLUSTER_MS = 500  # see the module docstring: bounds what a crash can lose
MAX_QUEUE = 256  # frames: ≈ 8.5 s of 30 fps video, 5 s of 20 ms Opus frames
POLL_S = 0.02  # writer thread wake-up period; adds at most this much to what a crash loses


@dataclass(frozen=True, slots=True)
class CodecSpec:
    name: str  # libavcodec's name
    kind: str  # "audio" or "video"
    container: str  # libavformat muxer
    suffix: str
    clock_rate: int  # RTP clock: the time base of the RTP timestamps and of the file's pts


CODECS = {
    "vp8": CodecSpec("vp8", "video", "webm", ".webm", 90_000),
    "h264": CodecSpec("h264", "video", "matroska", ".mkv", 90_000),
    "opus": CodecSpec("opus", "audio", "webm", ".webm", 48_000),
}


def codec_spec(mime: str) -> CodecSpec:
    """``video/VP8``, ``audio/opus``, ``h264``... (case-insensitive) to what is written for it."""
    try:
        return CODECS[mime.lower().rpartition("/")[2]]
    except KeyError:
        raise ValueError(f"cannot record {mime!r}: only {', '.join(CODECS)}") from None


@dataclass(slots=True)
class WriterStats:
    frames_written: int = 0
    bytes_written: int = 0
    dropped_queue_full: int = 0  # the frame that found the queue full
    dropped_awaiting_keyframe: int = 0  # video frames before the first keyframe or after a drop
    dropped_late: int = 0  # audio packets older than one already written (reordered in the network)

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_awaiting_keyframe + self.dropped_late


OnError = Callable[["TrackWriter", BaseException], object]  # e.g. a call_soon_threadsafe lambda
Payload = bytes | Sequence[bytes]


class TrackWriter:
    """Remuxes one track's encoded frames into ``{stem}.webm`` / ``{stem}.mkv`` on a thread of its own.

    ``on_error(writer, exc)`` is called from the writer thread when a write fails (e.g. ENOSPC; the writer
    then stops and what was written stays readable) and from the thread running :meth:`close` when
    finalizing fails: marshal it to the event loop with ``loop.call_soon_threadsafe``.
    """

    def __init__(
        self,
        stem: str | os.PathLike[str],
        mime: str,
        *,
        on_error: OnError | None = None,
        max_queue: int = MAX_QUEUE,
        cluster_ms: int = CLUSTER_MS,
        audio_channels: int | None = None,  # None: from the first Opus packet's stereo flag
        clock: Callable[[], float] = time.time,
        key: PersonKey | None = None,  # the publisher's: the file is sealed with it
    ) -> None:
        self.codec = codec_spec(mime)
        self.kind = self.codec.kind
        self.key = key
        sealed = SEALED_SUFFIX if key is not None else ""
        self.path = Path(f"{os.fspath(stem)}{self.codec.suffix}{sealed}")
        self.stats = WriterStats()
        # Wall-clock time (``clock()``) of the first accepted frame, which is pts 0 of the file: with the
        # other tracks' values it aligns audio and video of a session.
        self.first_wall_time: float | None = None
        self.first_rtp_timestamp: int | None = None
        self.error: BaseException | None = None  # the write error that stopped the writer
        self.finalize_error: BaseException | None = None
        self.finalized: FinalizeResult | None = None
        self._on_error = on_error
        self._max_queue = max_queue
        self._options = {"live": "1", "cluster_time_limit": str(cluster_ms), "flush_packets": "1"}
        self._channels = audio_channels
        self._clock = clock
        self._is_video = self.kind == "video"
        self._time_base = Fraction(1, self.codec.clock_rate)
        self._queue: deque[tuple[Payload, int, bool]] = deque()
        self._accepting = True
        self._need_keyframe = self._is_video
        self._stopping = False
        self._close_called = False
        self._wake = threading.Event()
        # Writer-thread state.
        self._out: OutputContainer | None = None
        self._sink: SealedWriter | None = None  # what the muxer writes into, when sealed
        self._stream: Stream | None = None
        self._base = 0  # extended RTP timestamp of pts 0 (the first accepted frame's, unless rebased)
        self._prev_ts: int | None = None  # the previous frame's RTP timestamp...
        self._prev_ext = 0  # ...and its unwrapped value
        self._last_pts = -1  # of the last frame written
        self._last_duration = 0  # audio: from the TOC; video: the interval to the frame before
        self._thread = threading.Thread(target=self._run, name=f"writer {self.path.name}", daemon=True)
        self._thread.start()

    # --- the media path ------------------------------------------------------------------------

    def write(self, data: Payload, rtp_timestamp: int, keyframe: bool) -> None:
        """Queue one encoded frame (bytes, or the depayloaded packets to be joined off the loop).

        Never blocks. Video starts at a keyframe; when the queue is full the frame is dropped and, for
        video, so is everything up to the next keyframe. A no-op once closing or after a write error.
        """
        if not self._accepting:
            return
        if self._need_keyframe:
            if not keyframe:
                self.stats.dropped_awaiting_keyframe += 1
                return
            self._need_keyframe = False
        if len(self._queue) >= self._max_queue:
            self.stats.dropped_queue_full += 1
            self._need_keyframe = self._is_video
            return
        if self.first_wall_time is None:
            self.first_wall_time = self._clock()
            self.first_rtp_timestamp = rtp_timestamp
        self._queue.append((data, rtp_timestamp, keyframe))

    # --- closing -------------------------------------------------------------------------------

    def close(self, *, finalize: bool = True, drain_timeout: float = 5.0) -> None:
        """Stop capturing at once, write what is queued, close the file and (by default) finalize it.

        Blocks until done (the queue drains in milliseconds; finalizing copies the file once: 0.2 s for
        10 minutes of 1 Mbit/s video from the page cache): use :meth:`aclose` on the event loop. Never
        raises: failures go to ``on_error`` and ``error`` / ``finalize_error``; an unfinalized file keeps
        its ``.partial`` marker.
        """
        self._accepting = False
        if self._close_called:
            return
        self._stopping = True
        self._wake.set()
        if threading.current_thread() is self._thread:
            return  # called from on_error: the thread is on its way out; close again from elsewhere
        self._close_called = True
        self._thread.join(drain_timeout)
        if self._thread.is_alive():
            self._report(
                TimeoutError(f"{self.path.name}: still writing after {drain_timeout} s (disk stalled?)")
            )
            return
        if not finalize:
            return
        if self.stats.frames_written == 0:
            if self.error is None:
                marker_path(self.path).unlink(missing_ok=True)  # never opened: nothing to finalize
            return
        try:
            ring = KeyRing([self.key]) if self.key is not None else None
            self.finalized = finalize_file(self.path, ring)
        except Exception as exc:
            self.finalize_error = exc
            log.warning("finalizing %s failed: %s (run repair later)", self.path, exc)
            self._report(exc)

    async def aclose(self, *, finalize: bool = True, drain_timeout: float = 5.0) -> None:
        """:meth:`close` in a worker thread; capture stops before the first await."""
        self._accepting = False
        await asyncio.to_thread(self.close, finalize=finalize, drain_timeout=drain_timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def written_duration(self) -> float:
        """Seconds from pts 0 to the end of the last written frame (video: its start + one interval)."""
        return (self._last_pts + self._last_duration) / self.codec.clock_rate if self._last_pts >= 0 else 0.0

    # --- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        try:
            while True:
                self._wake.wait(POLL_S)
                self._wake.clear()
                stopping = self._stopping  # read before draining: nothing is queued after it is set
                while queue:
                    self._mux(*queue.popleft())
                if stopping:
                    break
        except Exception as exc:
            self._fail(exc)
        finally:
            self._close_container()

    def _mux(self, data: Payload, rtp_timestamp: int, keyframe: bool) -> None:
        if not isinstance(data, bytes):
            data = b"".join(data)
        if self._prev_ts is None:
            assert self.first_rtp_timestamp is not None
            self._prev_ts = self._prev_ext = self._base = self.first_rtp_timestamp
        # RTP timestamps are 32-bit and wrap (every 13 h at 90 kHz, 25 h at 48 kHz): extend each one by
        # its signed distance to the previous one.
        delta = (rtp_timestamp - self._prev_ts) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        self._prev_ts = rtp_timestamp
        self._prev_ext += delta
        if self._out is None and not self._open(data, keyframe):
            self.stats.dropped_awaiting_keyframe += 1
            return
        out, stream = self._out, self._stream
        assert out is not None and stream is not None
        pts = self._prev_ext - self._base
        if pts <= self._last_pts:
            if not self._is_video and self._last_pts - pts < self.codec.clock_rate:
                self.stats.dropped_late += 1  # reordered in the network: its place is already taken
                return
            # The sender's clock went back (video never arrives out of order; a restarted stream does):
            # continue the file's timeline one frame after the last. A jump forward is kept as a gap
            # (a paused track); a new sender (new SSRC) deserves a new writer anyway.
            step = max(self._last_duration, 1)
            self._base -= self._last_pts + step - pts
            pts = self._last_pts + step
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = self._time_base
        packet.pts = packet.dts = pts
        if self._is_video:
            packet.is_keyframe = keyframe
            duration = pts - self._last_pts if self._last_pts >= 0 else 0
        else:
            packet.is_keyframe = True
            duration = packet.duration = opus_samples(data)
        out.mux(packet)
        if self._sink is not None:
            self._sink.flush()  # seals what the muxer wrote (a closed cluster), if anything
        self._last_pts = pts
        self._last_duration = duration
        self.stats.frames_written += 1
        self.stats.bytes_written += len(data)
        recording_stats.add_media_bytes(len(data))  # the node's metric (recording/stats.py)

    def _open(self, first: bytes, keyframe: bool) -> bool:
        """Create the file once the codec's parameters are known: False if ``first`` cannot start it."""
        name = self.codec.name
        width = height = 0
        if self._is_video:
            dims = vp8_dimensions(first) if name == "vp8" else h264_dimensions(first)
            if not keyframe or dims is None:
                return False
            width, height = dims
        self.path.parent.mkdir(parents=True, exist_ok=True)
        marker_path(self.path).touch()  # before the file exists: a crash never leaves it unmarked
        if self.key is not None:
            self._sink = SealedWriter(self.path, self.key)
            out = av.open(self._sink, "w", format=self.codec.container, options=self._options)
        else:
            out = av.open(os.fspath(self.path), "w", format=self.codec.container, options=self._options)
        try:
            if self._is_video:
                # No codec context, so nothing is ever opened for encoding. For H264, PyAV 18 takes the
                # extradata (SPS + PPS) from the first packet before writing the header.
                stream = out.add_mux_stream(name, width=width, height=height, time_base=self._time_base)
            else:
                channels = self._channels or (2 if first and first[0] & 0x04 else 1)
                stream = _add_opus_stream(out, channels)
                stream.time_base = self._time_base
        except Exception:
            out.close()
            self._close_sink()
            raise
        self._out = out
        self._stream = stream
        return True

    def _fail(self, exc: BaseException) -> None:
        self._accepting = False
        self.error = exc
        self._queue.clear()
        log.error("recording %s stopped: %s", self.path, exc)
        self._report(exc)

    def _close_container(self) -> None:
        out, self._out = self._out, None
        if out is None:
            return
        try:
            out.close()  # the trailer closes the last cluster
        except Exception as exc:
            if self.error is None:
                self._fail(exc)
        finally:
            self._close_sink()

    def _close_sink(self) -> None:
        sink, self._sink = self._sink, None
        if sink is None:
            return
        try:
            sink.close()  # seals what the trailer wrote
        except Exception as exc:
            if self.error is None:
                self._fail(exc)

    def _report(self, exc: BaseException) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(self, exc)
        except Exception:
            log.exception("on_error callback failed for %s", self.path)


# --- codec parameters from the bitstream ---------------------------------------------------------


def vp8_dimensions(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe (RFC 6386 §9.1), None if ``frame`` is not one."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width, height = struct.unpack_from("<HH", frame, 6)
    return width & 0x3FFF, height & 0x3FFF  # the top 2 bits are an upscaling hint


def opus_samples(packet: bytes) -> int:
    """Samples (at 48 kHz) in one Opus packet, from its TOC byte (RFC 6716 §3.1); 0 if malformed."""
    if not packet:
        return 0
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        frame = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        return frame
    if code < 3:
        return 2 * frame
    return frame * (packet[1] & 0x3F) if len(packet) > 1 else 0


def annexb_nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B access unit (what aiortc's H264 depayloader produces)."""
    units = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        j = data.find(b"\x00\x00\x01", i + 3)
        unit = data[i + 3 : j if j >= 0 else len(data)]
        units.append(unit.rstrip(b"\x00") if j >= 0 else unit)  # zeros before a 4-byte start code
        i = j
    return units


def h264_dimensions(access_unit: bytes) -> tuple[int, int] | None:
    """Width and height from the SPS of an access unit that carries both SPS and PPS, else None."""
    units = annexb_nal_units(access_unit)
    sps = next((u for u in units if u and u[0] & 0x1F == 7), None)
    if sps is None or not any(u and u[0] & 0x1F == 8 for u in units):
        return None
    try:
        return h264_sps_dimensions(sps)
    except (IndexError, ValueError):
        return None


class _Bits:
    """MSB-first bit reader with Exp-Golomb codes (H.264 §9.1)."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def u(self, n: int) -> int:
        if n > self.left:
            raise IndexError("SPS ends early")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def h264_sps_dimensions(sps: bytes) -> tuple[int, int]:
    """Cropped picture size from a sequence parameter set NAL unit (H.264 §7.3.2.1.1, §7.4.2.1.1)."""
    rbsp = sps[1:].replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention bytes
    b = _Bits(rbsp)
    profile = b.u(8)
    b.u(16)  # constraint flags, level
    b.ue()  # seq_parameter_set_id
    chroma_format = 1
    separate_planes = 0
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format = b.ue()
        if chroma_format == 3:
            separate_planes = b.u(1)
        b.ue()  # bit_depth_luma_minus8
        b.ue()  # bit_depth_chroma_minus8
        b.u(1)  # qpprime_y_zero_transform_bypass_flag
        if b.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if b.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se()) % 256
                        last = nxt or last
    b.ue()  # log2_max_frame_num_minus4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    b.u(1)  # gaps_in_frame_num_value_allowed_flag
    width = (b.ue() + 1) * 16
    map_units = b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)  # mb_adaptive_frame_field_flag
    b.u(1)  # direct_8x8_inference_flag
    height = map_units * 16 * (2 - frame_mbs_only)
    if b.u(1):  # frame_cropping_flag
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        if chroma_format == 0 or separate_planes:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            crop_x = 2 if chroma_format in (1, 2) else 1
            crop_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    return width, height


# --- Opus stream parameters ----------------------------------------------------------------------


def _ebml(element_id: int, payload: bytes) -> bytes:
    return (
        element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
        + ((1 << 56) | len(payload)).to_bytes(8, "big")
        + payload
    )


def _ebml_uint(element_id: int, value: int) -> bytes:
    return _ebml(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def opus_head(channels: int) -> bytes:
    """RFC 7845 §5.1 identification header. Pre-skip 0: the stream was encoded elsewhere, long before
    the recording started, so there is no encoder delay to skip at pts 0."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, 0, 48_000, 0, 0)


def _add_opus_stream(out: OutputContainer, channels: int) -> Stream:
    """An Opus stream with a proper OpusHead (Matroska requires it as CodecPrivate) and no encoder.

    PyAV 18 offers no setter for a codec-less stream's extradata or channel layout, so the parameters
    come from a template: a minimal WebM header (EBML header, Info, one A_OPUS track, an empty cluster)
    demuxed from memory. ``add_stream_from_template`` copies them without opening any codec.
    """
    track = _ebml(
        0xAE,  # TrackEntry
        _ebml_uint(0xD7, 1)  # TrackNumber
        + _ebml_uint(0x73C5, 1)  # TrackUID
        + _ebml_uint(0x83, 2)  # TrackType: audio
        + _ebml(0x86, b"A_OPUS")
        + _ebml(0x63A2, opus_head(channels))  # CodecPrivate
        + _ebml(0xE1, _ebml(0xB5, struct.pack(">d", 48_000.0)) + _ebml_uint(0x9F, channels)),
    )
    header = _ebml(0x1A45DFA3, _ebml(0x4282, b"webm") + _ebml_uint(0x4287, 4) + _ebml_uint(0x4285, 2))
    segment = _ebml(
        0x18538067,
        _ebml(0x1549A966, _ebml_uint(0x2AD7B1, 1_000_000))  # Info: TimestampScale 1 ms
        + _ebml(0x1654AE6B, track)  # Tracks
        + _ebml(0x1F43B675, _ebml_uint(0xE7, 0)),  # an empty Cluster, so probing ends cleanly
    )
    with av.open(io.BytesIO(header + segment), format="matroska") as template:
        return out.add_stream_from_template(template.streams.audio[0], opaque=True)
