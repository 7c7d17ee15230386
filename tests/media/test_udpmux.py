"""Single-port mode (media/udpmux.py): many real aiortc viewers on one UDP port, and batched sends."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pylibsrtp import Policy, Session

from media import udpmux
from tests.conftest import RunningNode, free_port, start_node
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return load_clip()


@pytest.fixture(params=[0, 2], ids=["in-process", "2-workers"])
def port_node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningNode]:
    port = free_port()
    while port + 2 > 65535:
        port = free_port()
    running = start_node(
        tmp_path, {"MEDSTAGE_MEDIA_PORT": str(port), "MEDSTAGE_MEDIA_WORKERS": str(request.param)}
    )
    running.media_port, running.media_workers = port, request.param  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()[-4000:]


def child_pids(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def udp_sockets(pid: int) -> int:
    """UDP sockets process ``pid`` holds open (its fds against the namespace's /proc/net/udp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(match.group(1))
    count = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            next(f)
            count += sum(1 for line in f if line.split()[9] in inodes)
    return count


async def consent_answered(viewer: MedstageClient) -> None:
    """One consent check, built and sent exactly as aioice's ``Connection.query_consent`` does."""
    assert viewer.subscriber_pc is not None
    connection = viewer.subscriber_pc.getTransceivers()[0].receiver.transport.transport._connection
    pair = connection._nominated[1]
    response, _ = await pair.protocol.request(
        connection.build_request(pair, nominate=False),
        pair.remote_addr,
        integrity_key=connection.remote_password.encode(),
        retransmissions=2,
    )
    assert response.message_class.name == "RESPONSE"


def candidate_ports(sdp: str) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"a=candidate:\S+ 1 udp \d+ \S+ (\d+) typ host", sdp)}


async def test_viewers_of_two_stages_share_one_port_and_each_gets_only_its_own_speaker(
    port_node: RunningNode, clip
) -> None:  # type: ignore[no-untyped-def]
    """Two stages, a speaker each, 8 viewers each: every viewer's offer names the one configured
    port, the node holds one UDP socket for all 16 viewers, and each viewer receives its own stage's
    speaker, keyframe first (a datagram routed to the wrong viewer fails its SRTP check and is lost,
    so complete frames on every viewer mean no crosstalk)."""
    stages = ["mux-" + uuid.uuid4().hex[:8] for _ in range(2)]
    speakers = [MedstageClient(port_node.url) for _ in stages]
    viewers = [[MedstageClient(port_node.url) for _ in range(8)] for _ in stages]
    everyone = speakers + [v for group in viewers for v in group]
    try:
        await asyncio.gather(*(c.connect() for c in everyone))
        for stage, speaker in zip(stages, speakers, strict=True):
            await speaker.join(stage, "Dr Speaker", "host")
            await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        await asyncio.gather(
            *(
                v.join(stage, f"Dr Viewer {i}", "audience")
                for stage, group in zip(stages, viewers, strict=True)
                for i, v in enumerate(group)
            )
        )
        for speaker, group in zip(speakers, viewers, strict=True):
            firsts = await asyncio.gather(*(v.wait_media(kind="video", timeout=30) for v in group))
            assert all(s.first_frame_keyframe for s in firsts)
            for v in group:
                assigned = [m for m in v.slots.values() if m["kind"] == "video"]
                assert [m["participant_id"] for m in assigned] == [speaker.participant_id]
        await asyncio.sleep(1.0)
        for group in viewers:
            for v in group:
                assert v.received("video").frames_complete >= 10
                assert v.received("audio").packets >= 20
        ports = set()
        for v in (v for group in viewers for v in group):
            assert v.subscriber_pc is not None and v.subscriber_pc.remoteDescription is not None
            ports |= candidate_ports(v.subscriber_pc.remoteDescription.sdp)
        base, workers = port_node.media_port, port_node.media_workers  # type: ignore[attr-defined]
        if workers == 0:
            assert ports == {base}, ports
            # One socket for 16 viewers, one per publisher connection (2); before: one per viewer too.
            assert udp_sockets(port_node.proc.pid) <= 3
        else:
            # The audience is on the workers, worker i on base + 1 + i: one port per process, spread.
            assert ports == {base + 1 + i for i in range(workers)}, ports
            children = child_pids(port_node.proc.pid)
            assert len(children) == workers
            # Each worker: its viewers' shared socket and the link's media socket, whatever its viewers.
            assert all(udp_sockets(c) <= 2 for c in children)
        assert port_node.metrics()["medstage_decoded_frames_total"] == 0
        # Receiver reports (every 0.5-1.5 s per receiving track: 32 tracks) read on the shared socket.
        for _ in range(20):
            metrics = port_node.metrics()
            if metrics["medstage_viewer_rtcp_packets_total"] >= 64:
                break
            await asyncio.sleep(0.25)
        assert metrics["medstage_viewer_rtcp_packets_total"] >= 64
        assert metrics["medstage_viewer_rtcp_dropped_total"] == 0
        # Consent freshness (RFC 7675) as aioice checks it every ~5 s: each viewer's request through
        # the shared port is answered by its own connection (integrity checked with its password).
        for v in (v for group in viewers for v in group):
            await consent_answered(v)
    finally:
        await asyncio.gather(*(c.close() for c in everyone), return_exceptions=True)


async def test_a_media_port_already_taken_falls_back_to_a_socket_per_viewer(tmp_path: Path, clip) -> None:  # type: ignore[no-untyped-def]
    """Another process holds the configured port: viewers still connect and receive, on aioice's own
    sockets, and the node says why."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    node = start_node(tmp_path, {"MEDSTAGE_MEDIA_PORT": str(taken.getsockname()[1])})
    stage = "mux-" + uuid.uuid4().hex[:8]
    try:
        async with MedstageClient(node.url) as speaker, MedstageClient(node.url) as viewer:
            await speaker.join(stage, "Dr Speaker", "host")
            await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
            await viewer.join(stage, "Dr Viewer", "audience")
            stats = await viewer.wait_media(kind="video", timeout=20)
            assert stats.first_frame_keyframe is True
            assert viewer.subscriber_pc is not None and viewer.subscriber_pc.remoteDescription is not None
            ports = candidate_ports(viewer.subscriber_pc.remoteDescription.sdp)
            assert ports and taken.getsockname()[1] not in ports
        assert "no single-port media socket on 127.0.0.1" in node.log()
    finally:
        taken.close()
        assert node.stop() == 0, node.log()[-4000:]


def test_the_username_of_a_binding_request_is_found_among_its_attributes() -> None:
    import aioice.stun

    request = aioice.stun.Message(
        message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
    )
    request.attributes["PRIORITY"] = 1234
    request.attributes["USERNAME"] = "ours:theirs"
    request.add_message_integrity(b"key")
    assert udpmux.stun_username(bytes(request)) == "ours:theirs"
    response = aioice.stun.Message(
        message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.RESPONSE
    )
    assert udpmux.stun_username(bytes(response)) is None
    assert udpmux.stun_username(b"\x00\x01" + bytes(30)) is None  # no magic cookie: not STUN
    assert udpmux.stun_username(b"\x80\x60" + bytes(100)) is None  # RTP


def _session() -> Session:
    return Session(Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND))


def _rtp(seq: int, size: int = 1000) -> bytes:
    return bytes([0x80, 96]) + seq.to_bytes(2, "big") + bytes(8) + bytes(size - 12)


@pytest.mark.skipif(udpmux._libc is None, reason="sendmmsg is Linux-only")
def test_a_batch_leaves_in_order_and_a_failing_destination_costs_only_its_datagram() -> None:
    receivers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for r in receivers:
            r.bind(("127.0.0.1", 0))
            r.settimeout(2)
        sender.setblocking(False)
        batch = udpmux.SendBatch(sender.fileno(), None, capacity=8)
        protect = batch.protector(_session())
        good = [batch.destination(r.getsockname()) for r in receivers]
        bad = batch.destination(("127.0.0.1", 0))  # EINVAL from the kernel, for this datagram only
        drops = udpmux.send_drops
        # 11 datagrams through a batch of 8: the ninth protect() flushes the first eight itself.
        plan = [good[0], good[1], bad, good[0], good[1], good[0], bad, good[1], good[0], good[1], good[0]]
        for seq, destination in enumerate(plan):
            batch.queue(protect(_rtp(seq)), destination)
        batch.flush()
        assert batch.count == 0
        assert udpmux.send_drops - drops == 2
        for index, r in enumerate(receivers):
            expected = [seq for seq, d in enumerate(plan) if d is good[index]]
            got = []
            for _ in expected:
                data = r.recv(2000)
                assert len(data) == 1000 + 10  # SRTP: the 10-byte auth tag of the default profile
                got.append(int.from_bytes(data[2:4], "big"))
            assert got == expected
    finally:
        for s in (*receivers, sender):
            s.close()


@pytest.mark.skipif(udpmux._libc is None, reason="sendmmsg is Linux-only")
def test_a_full_send_buffer_drops_and_counts_the_rest_of_the_batch_without_blocking() -> None:
    """A Unix datagram pair pushes back like a full UDP send buffer (EAGAIN once the peer's queue is
    full): flush() returns at once, what was refused is counted, what was accepted arrives whole."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        a.setblocking(False)
        b.setblocking(False)
        batch = udpmux.SendBatch(a.fileno(), None, capacity=512)
        protect = batch.protector(_session())
        from cffi import FFI

        connected = FFI().NULL  # the pair is connected: no address per datagram
        drops = udpmux.send_drops
        for seq in range(500):
            batch.queue(protect(_rtp(seq)), connected)
        batch.flush()
        dropped = udpmux.send_drops - drops
        received = []
        while True:
            try:
                received.append(b.recv(2000))
            except BlockingIOError:
                break
        assert dropped > 0, "the pair never pushed back: the test proves nothing"
        assert len(received) + dropped == 500
        assert [int.from_bytes(d[2:4], "big") for d in received] == list(range(len(received)))
        assert all(len(d) == 1010 for d in received)
    finally:
        a.close()
        b.close()


async def test_queued_datagrams_leave_at_the_end_of_the_callback_without_an_explicit_flush() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        sender.setblocking(False)
        batch = udpmux.SendBatch(sender.fileno(), asyncio.get_running_loop())
        protect = batch.protector(_session())
        batch.queue(protect(_rtp(7)), batch.destination(receiver.getsockname()))
        with pytest.raises(BlockingIOError):
            receiver.recv(2000)  # nothing sent yet: queued
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert int.from_bytes(receiver.recv(2000)[2:4], "big") == 7
    finally:
        receiver.close()
        sender.close()


class Recorder:
    """Stands where aioice's StunProtocol stands: records what the mux hands it."""

    def __init__(self) -> None:
        self.stun: list[bytes] = []
        self.data: list[bytes] = []
        self.lost = asyncio.Event()
        self.receiver = self  # StunProtocol.receiver is its Connection
        self.local_candidate = type("Candidate", (), {"component": 1})()
        self.transport: udpmux.MuxTransport | None = None

    def connection_made(self, transport: udpmux.MuxTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.stun.append(data)

    def data_received(self, data: bytes, component: int) -> None:
        self.data.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


def binding_request(username: str) -> bytes:
    import aioice.stun

    request = aioice.stun.Message(
        message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
    )
    request.attributes["USERNAME"] = username
    return bytes(request)


async def test_the_mux_routes_by_address_learns_from_usernames_and_forgets_closed_connections() -> None:
    from tests.support.waiting import eventually

    mux = await udpmux.UdpMux.open("127.0.0.1", 0)
    viewer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    viewer.bind(("127.0.0.1", 0))
    viewer.setblocking(False)
    a, b = Recorder(), Recorder()
    try:
        mux.attach(a, "ufragA")
        mux.attach(b, "ufragB")
        unroutable = udpmux.unroutable
        viewer.sendto(b"\x80\xc9" + bytes(30), mux.sockname)  # RTCP from nobody's address
        await eventually(lambda: udpmux.unroutable == unroutable + 1, 2)
        viewer.sendto(binding_request("ufragA:theirs"), mux.sockname)  # names A: the address is A's
        await eventually(lambda: len(a.stun) == 1, 2)
        viewer.sendto(b"\x80\xc9" + bytes(30), mux.sockname)  # now A's, straight to its connection
        viewer.sendto(b"\x16\xfe\xfd" + bytes(30), mux.sockname)  # DTLS too
        await eventually(lambda: len(a.data) == 2, 2)
        viewer.sendto(binding_request("ufragB:theirs"), mux.sockname)  # the same address names B
        viewer.sendto(b"\x80\xc9" + bytes(30), mux.sockname)
        await eventually(lambda: len(b.stun) == 1 and len(b.data) == 1, 2)
        assert (len(a.stun), len(a.data)) == (1, 2), "A got datagrams after its address moved"
        # Writing through a connection's transport leaves from the shared port.
        assert b.transport is not None
        b.transport.sendto(b"hello", viewer.getsockname())
        await eventually(lambda: _recv(viewer) == (b"hello", mux.sockname), 2)
        b.transport.close()
        await asyncio.wait_for(b.lost.wait(), 2)
        assert b not in mux.by_ufrag.values() and b not in mux.by_addr.values()
        viewer.sendto(b"\x80\xc9" + bytes(30), mux.sockname)
        await eventually(lambda: udpmux.unroutable == unroutable + 2, 2)
        assert len(b.data) == 1
    finally:
        mux.close()
        viewer.close()


def _recv(sock: socket.socket) -> tuple[bytes, tuple[str, int]] | None:
    try:
        return sock.recvfrom(2048)
    except BlockingIOError:
        return None
