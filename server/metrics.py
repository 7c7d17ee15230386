"""Prometheus metrics (listed in docs/operations.md). Media and recording counters live in media.stats
and recording.stats (plain ints: the hot path and the writer threads never touch prometheus-client) and
are read at scrape time by a collector; signalling counters are ordinary prometheus-client metrics."""

from __future__ import annotations

import gc
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from server import gcpolicy, loophealth

REGISTRY = CollectorRegistry()

connections = Gauge("medstage_signalling_connections", "Open signalling WebSockets", registry=REGISTRY)
signalling_messages = Counter(
    "medstage_signalling_messages", "Signalling frames", ["direction"], registry=REGISTRY
)
signalling_errors = Counter(
    "medstage_signalling_errors", "Error frames sent, by code", ["code"], registry=REGISTRY
)

COUNTERS = {
    "rtp_packets_received": "RTP packets received from publishers",
    "rtp_packets_sent": "RTP packets forwarded to subscribers",
    "rtp_sent_bytes": "RTP bytes (header and payload, before SRTP) forwarded to subscribers",
    "retransmissions": "RTP packets resent on a subscriber's NACK",
    "retransmissions_suppressed": "NACKed packets not resent (per-slot hold-off, resend cap or budget)",
    "redundant_copies": "copies of frames' last packets sent to viewers on a steadily lossy link",
    "keyframe_requests_upstream": "PLIs sent to publishers",
    "keyframe_requests_downstream": "PLI/FIR received from subscribers",
    "send_errors": "Failed sends to subscribers",
    "remb_received": "REMB bandwidth estimates received from viewers (one per viewer connection and report)",
    "probes_started": "Padding probes started towards viewers (a higher layer is tried with padding first)",
    "probes_succeeded": "Padding probes that went through without a congestion signal (up-switch)",
    "padding_packets_sent": "Padding-only RTX packets sent to viewers by padding probes",
    "transport_feedback": "Transport feedback messages on padding probes read from viewers",
    "probes_ended_by_delay": "Padding probes ended by rising delay (transport feedback) before any loss",
    "send_drops": "Datagrams to subscribers the kernel refused (full send buffer): dropped, never waited for",
    "unroutable_datagrams": "Datagrams on the shared media port from an address no viewer connection owns",
    "viewer_rtcp_packets": "Viewers' SRTCP packets read on the shared media socket (reports, NACK, PLI/FIR)",
    "viewer_rtcp_dropped": "Viewers' SRTCP packets that failed to decrypt or to parse on the shared socket",
    "decoded_frames": "Frames decoded by this process (an SFU decodes none)",
    "task_failures": "Supervised background tasks that failed (each is logged and restarted)",
    "link_datagrams_sent": "Datagrams sent to media workers (forwarding link: one per packet per worker)",
    "link_send_errors": "Forwarding-link datagrams not sent (a worker buffer full, or the worker gone)",
    "media_worker_restarts": "Media worker processes that stopped and were started again",
    "recording_written_bytes": "Encoded media bytes written to recording track files (no container framing)",
}


def counter_family(name: str, help_: str, value: int) -> CounterMetricFamily:
    """``medstage_<name>_total``; a name ending in ``_bytes`` declares its unit (OpenMetrics)."""
    unit = "bytes" if name.endswith("_bytes") else ""
    family = CounterMetricFamily(f"medstage_{name}", help_, unit=unit)
    family.add_metric([], value)
    return family


def histogram_family(
    name: str, help_: str, by: dict[str, loophealth.Histogram], label: str = ""
) -> HistogramMetricFamily:
    """``medstage_<name>`` from loophealth histograms, one per value of ``label`` (or one, key "")."""
    family = HistogramMetricFamily(f"medstage_{name}", help_, labels=[label] if label else [], unit="seconds")
    for key, histogram in by.items():
        buckets = [("+Inf" if le == float("inf") else repr(le), n) for le, n in histogram.cumulative()]
        family.add_metric([key] if label else [], buckets, histogram.total)
    return family


def loop_health_families() -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
    """Event-loop lag and GC pauses of this process since it started (docs/operations.md, Loop health)."""
    figures = loophealth.snapshot()
    yield histogram_family(
        "event_loop_lag_seconds",
        "How late the event loop ran its lag timer (loop_lag_interval_ms)",
        {"": figures.lag},
    )
    longest = GaugeMetricFamily(
        "medstage_event_loop_lag_max_seconds", "Longest event-loop lag since start", unit="seconds"
    )
    longest.add_metric([], figures.lag.largest)
    yield longest
    pauses = {str(g): h for g, h in figures.gc_pauses.items()}
    yield histogram_family(
        "gc_pause_seconds", "Time per garbage collection, by generation", pauses, "generation"
    )
    collections = CounterMetricFamily(
        "medstage_gc_collections", "Garbage collections, by generation", labels=["generation"]
    )
    collected = CounterMetricFamily(
        "medstage_gc_collected_objects", "Unreachable objects freed by the collector", labels=["generation"]
    )
    for generation, histogram in figures.gc_pauses.items():
        collections.add_metric([str(generation)], histogram.count)
        collected.add_metric([str(generation)], figures.gc_collected[generation])
    yield collections
    yield collected
    frozen = GaugeMetricFamily(
        "medstage_gc_frozen_objects", "Objects in the permanent generation (gc.freeze)"
    )
    frozen.add_metric([], gc.get_freeze_count())
    yield frozen
    passes = CounterMetricFamily(
        "medstage_gc_passes",
        "GC policy passes (freeze: after joins; full: unfreeze and collect)",
        labels=["kind"],
    )
    for kind, n in gcpolicy.passes.items():
        passes.add_metric([kind.value], n)
    yield passes


class _LoopHealthCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        return loop_health_families()


REGISTRY.register(_LoopHealthCollector())


def render() -> bytes:
    return generate_latest(REGISTRY)


outbox_dropped = Counter(
    "medstage_outbox_dropped", "Frames dropped for clients that read too slowly", registry=REGISTRY
)
