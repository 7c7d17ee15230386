"""Prometheus metrics (listed in docs/operations.md). Media and recording counters live in media.stats
and recording.stats (plain ints: the hot path and the writer threads never touch prometheus-client) and
are read at scrape time by a collector; signalling counters are ordinary prometheus-client metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily

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
    "keyframe_requests_upstream": "PLIs sent to publishers",
    "keyframe_requests_downstream": "PLI/FIR received from subscribers",
    "send_errors": "Failed sends to subscribers",
    "send_drops": "Datagrams to subscribers the kernel refused (full send buffer): dropped, never waited for",
    "unroutable_datagrams": "Datagrams on the shared media port from an address no viewer connection owns",
    "viewer_rtcp_packets": "Viewers' SRTCP packets read on the shared media socket (reports, NACK, PLI/FIR)",
    "viewer_rtcp_dropped": "Viewers' SRTCP packets that failed to decrypt or to parse on the shared socket",
    "decoded_frames": "Frames decoded by this process (an SFU decodes none)",
    "task_failures": "Supervised background tasks that failed (each is logged and restarted)",
    "recording_written_bytes": "Encoded media bytes written to recording track files (no container framing)",
}


def counter_family(name: str, help_: str, value: int) -> CounterMetricFamily:
    """``medstage_<name>_total``; a name ending in ``_bytes`` declares its unit (OpenMetrics)."""
    unit = "bytes" if name.endswith("_bytes") else ""
    family = CounterMetricFamily(f"medstage_{name}", help_, unit=unit)
    family.add_metric([], value)
    return family


def render() -> bytes:
    return generate_latest(REGISTRY)


outbox_dropped = Counter(
    "medstage_outbox_dropped", "Frames dropped for clients that read too slowly", registry=REGISTRY
)
