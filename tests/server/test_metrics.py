"""/metrics after real traffic, parsed with prometheus-client's own parser: an aiortc publisher and a
viewer on a real node, comments and refused requests over the WebSocket, and a consented recording."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import RunningNode
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.waiting import eventually

POLICY = "2026-11"


@pytest.fixture
def node(recording_node: RunningNode) -> RunningNode:
    return recording_node


class Scrape:
    """One /metrics scrape, parsed by prometheus_client.parser."""

    def __init__(self, node: RunningNode) -> None:
        import urllib.request

        with urllib.request.urlopen(node.url + "/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            self.text = response.read().decode()
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}

    def family(self, name: str, type_: str) -> list[Sample]:
        assert name in self.families, f"no family {name}"
        family = self.families[name]
        assert family.type == type_, f"{name} is a {family.type}, not a {type_}"
        return family.samples

    def value(self, name: str, type_: str, **labels: str) -> float:
        """The value of ``name``'s one sample with ``labels`` (counters: the ``_total`` sample)."""
        sample_name = name + "_total" if type_ == "counter" else name
        found = [
            s.value
            for s in self.family(name, type_)
            if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) == 1, f"{sample_name}{labels}: {found}"
        return found[0]

    def histogram(self, name: str, part: str, **labels: str) -> float:
        """The ``_count``, ``_sum`` or ``_bucket`` (give ``le``) sample of histogram ``name``."""
        found = [
            s.value
            for s in self.family(name, "histogram")
            if s.name == f"{name}_{part}" and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) == 1, f"{name}_{part}{labels}: {found}"
        return found[0]


def test_every_family_follows_the_prometheus_naming_conventions(node: RunningNode) -> None:
    scrape = Scrape(node)
    assert scrape.families, scrape.text
    for name, family in scrape.families.items():
        assert name.startswith("medstage_"), name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name in (name + "_total", name + "_created"), sample.name
            elif family.type == "histogram":
                assert sample.name in (name + "_bucket", name + "_sum", name + "_count"), sample.name
            else:
                assert sample.name == name, sample.name
        assert "bytes" not in name or name.endswith("_bytes"), f"{name}: the unit goes last"
    for name in (
        "medstage_webhooks_delivered",
        "medstage_webhooks_failed_attempts",
        "medstage_outbox_dropped",
    ):
        scrape.family(name, "counter")


async def test_metrics_after_media_comments_errors_and_a_recording(node: RunningNode, rec_root: Path) -> None:
    clip = load_clip()
    stage = "met-" + uuid.uuid4().hex[:8]
    async with (
        MedstageClient(node.url) as host,
        MedstageClient(node.url) as viewer,
        MedstageClient(node.url) as other,
    ):
        await host.join(stage, "Dr Host", "host")
        await host.request(
            {"type": "consent.give", "scopes": ["media"], "policy_version": POLICY, "method": "join_prompt"}
        )
        await host.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        for i, client in enumerate((viewer, other)):
            await client.join(stage, f"Dr Viewer {i}", "audience")
            await client.wait_media(kind="video", timeout=20)
            await client.wait_media(kind="audio", timeout=10)
        started = await host.request({"type": "recording.start"})
        session = rec_root / stage / started["session_id"]

        for i in range(3):
            await viewer.request({"type": "comment.post", "text": f"Question {i}?"})
        refused = await viewer.request({"type": "no.such.message"}, check=False)
        assert refused["code"] == "unknown_type"
        refused = await viewer.request({"type": "comment.delete", "comment_id": "c-nope"}, check=False)
        assert refused["code"] == "not_found"

        await eventually(lambda: viewer.received("video").frames_complete >= 60, 20)
        await eventually(lambda: Scrape(node).value("medstage_recording_written_bytes", "counter") > 0, 10)
        # Read before the scrape: all that the viewers received was sent before it.
        received = [viewer.received(), other.received()]
        live = Scrape(node)

        # Media: packets and bytes forwarded, to each viewer's two slots.
        packets = live.value("medstage_rtp_packets_sent", "counter")
        sent_bytes = live.value("medstage_rtp_sent_bytes", "counter")
        resent = live.value("medstage_retransmissions", "counter")  # the viewer counts those too
        assert packets + resent >= sum(r.packets for r in received) > 0
        # Payload + the 12-byte header, for each subscriber.
        assert sent_bytes + 1500 * resent >= sum(r.bytes + 12 * r.packets for r in received)
        assert packets * 50 < sent_bytes < packets * 1500, (packets, sent_bytes)
        assert live.value("medstage_rtp_packets_received", "counter") > 0
        assert live.value("medstage_keyframe_requests_upstream", "counter") >= 1
        live.family("medstage_keyframe_requests_downstream", "counter")
        assert live.value("medstage_decoded_frames", "counter") == 0

        # Who is there and what flows.
        assert live.value("medstage_stages", "gauge") == 1
        assert live.value("medstage_participants", "gauge") == 3
        assert live.value("medstage_published_tracks", "gauge") == 2
        assert live.value("medstage_subscribed_tracks", "gauge") == 4  # each viewer's audio and video
        assert live.value("medstage_signalling_connections", "gauge") == 3

        # Signalling: frames each way, errors by code.
        assert live.value("medstage_signalling_messages", "counter", direction="in") >= 10
        assert live.value("medstage_signalling_messages", "counter", direction="out") >= 10
        assert live.value("medstage_signalling_errors", "counter", code="unknown_type") == 1
        assert live.value("medstage_signalling_errors", "counter", code="not_found") == 1

        # Recording: the counter is what the writers wrote, to the byte.
        await host.request({"type": "recording.stop"})
        await eventually(lambda: _manifest(session).get("status") == "complete", 15)
        tracks = _manifest(session)["tracks"]
        assert {t["kind"] for t in tracks} == {"audio", "video"}
        written = Scrape(node).value("medstage_recording_written_bytes", "counter")
        assert written == sum(t["bytes"] for t in tracks) > 0

    # Everyone gone: the gauges follow.
    await eventually(lambda: Scrape(node).value("medstage_participants", "gauge") == 0, 10)
    after = Scrape(node)
    assert after.value("medstage_published_tracks", "gauge") == 0
    assert after.value("medstage_subscribed_tracks", "gauge") == 0
    assert after.value("medstage_rtp_sent_bytes", "counter") >= sent_bytes


async def test_loop_health_and_gc_pauses_on_a_live_node(node: RunningNode) -> None:
    """The node watches its own loop from start-up (a tick every 50 ms) and its GC (start-up froze
    what it made: server/gcpolicy.py)."""
    lag = "medstage_event_loop_lag_seconds"
    stage = "loop-" + uuid.uuid4().hex[:8]
    async with MedstageClient(node.url) as host:
        await host.join(stage, "Dr Host", "host")
        await eventually(lambda: Scrape(node).histogram(lag, "count") >= 10, 10)
    scrape = Scrape(node)
    ticks = scrape.histogram(lag, "count")
    assert scrape.histogram(lag, "bucket", le="+Inf") == ticks
    assert scrape.histogram(lag, "bucket", le="0.001") <= scrape.histogram(lag, "bucket", le="10.0") <= ticks
    longest = scrape.value("medstage_event_loop_lag_max_seconds", "gauge")
    assert 0 <= longest < 10 and scrape.histogram(lag, "sum") >= longest
    for generation in "012":
        collections = scrape.value("medstage_gc_collections", "counter", generation=generation)
        assert scrape.histogram("medstage_gc_pause_seconds", "count", generation=generation) == collections
    # The start-up pass is a full collection, timed like any other.
    assert scrape.value("medstage_gc_collections", "counter", generation="2") >= 1
    assert scrape.histogram("medstage_gc_pause_seconds", "sum", generation="2") > 0
    scrape.family("medstage_gc_collected_objects", "counter")
    assert scrape.value("medstage_gc_passes", "counter", kind="full") >= 1, "start-up was frozen"
    assert scrape.value("medstage_gc_frozen_objects", "gauge") > 10_000


def _manifest(session: Path) -> dict[str, Any]:
    try:
        return json.loads((session / "manifest.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}
