"""Prometheus metrics (listed in docs/operations.md). Media and recording counters live in media.stats
and recording.stats (plain ints: the hot path and the writer threads never touch prometheus-client) and
are read at scrape time by a collector; signalling counters are ordinary prometheus-client metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from media import stats
from recording import stats as recording_stats

if TYPE_CHECKING:
    from server.stages import Node

REGISTRY = CollectorRegistry()

connections = Gauge("medstage_signalling_connections", "Open signalling WebSockets", registry=REGISTRY)
signalling_messages = Counter(
    "medstage_signalling_messages", "Signalling frames", ["direction"], registry=REGISTRY
)
signalling_errors = Counter(
    "medstage_signalling_errors", "Error frames sent, by code", ["code"], registry=REGISTRY
)

_COUNTERS = {
    "rtp_packets_received": "RTP packets received from publishers",
    "rtp_packets_sent": "RTP packets forwarded to subscribers",
    "rtp_sent_bytes": "RTP bytes (header and payload, before SRTP) forwarded to subscribers",
    "retransmissions": "RTP packets resent on a subscriber's NACK",
    "keyframe_requests_upstream": "PLIs sent to publishers",
    "keyframe_requests_downstream": "PLI/FIR received from subscribers",
    "send_errors": "Failed sends to subscribers",
    "decoded_frames": "Frames decoded by this process (an SFU decodes none)",
    "recording_written_bytes": "Encoded media bytes written to recording track files (no container framing)",
}


class _NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for name, value in (*stats.snapshot().items(), *recording_stats.snapshot().items()):
            yield _counter(name, _COUNTERS[name], value)
        stages = self.node.stages.values()
        for name, help_, value in (
            ("stages", "Stages on this node", len(self.node.stages)),
            ("participants", "Participants present", sum(len(s.stage.participants) for s in stages)),
            (
                "published_tracks",
                "Tracks being published",
                sum(len(p.publications) for s in stages for p in s.media.publishers.values()),
            ),
            (
                "subscribed_tracks",
                "Slots forwarding a track",
                sum(
                    len(p.active)
                    for s in stages
                    for pub in s.media.publishers.values()
                    for p in pub.publications.values()
                ),
            ),
            ("log_backlog", "Stage events not yet written to the backend", self._backlog()),
            ("relayed_out", "Clients here of stages hosted by other nodes", self._relayed("fronted")),
            ("relayed_in", "Clients on other nodes of stages hosted here", self._relayed("remotes")),
            (
                "nodes",
                "Live nodes this node knows of, itself included (joined.nodes)",
                len(self.node.cluster.node_urls),
            ),
        ):
            gauge = GaugeMetricFamily(f"medstage_{name}", help_)
            gauge.add_metric([], value)
            yield gauge

    def _backlog(self) -> int:
        return sum(log.backlog for log in self.node.cluster.logs.values())

    def _relayed(self, side: str) -> int:
        relay = self.node.cluster.relay
        return 0 if relay is None else len(getattr(relay, side))


def _counter(name: str, help_: str, value: int) -> CounterMetricFamily:
    """``medstage_<name>_total``; a name ending in ``_bytes`` declares its unit (OpenMetrics)."""
    unit = "bytes" if name.endswith("_bytes") else ""
    family = CounterMetricFamily(f"medstage_{name}", help_, unit=unit)
    family.add_metric([], value)
    return family


_collector: _NodeCollector | None = None


def bind(node: Node) -> None:
    global _collector
    if _collector is not None:
        REGISTRY.unregister(_collector)
    _collector = _NodeCollector(node)
    REGISTRY.register(_collector)


def render() -> bytes:
    return generate_latest(REGISTRY)


outbox_dropped = Counter(
    "medstage_outbox_dropped", "Frames dropped for clients that read too slowly", registry=REGISTRY
)
