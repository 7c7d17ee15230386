"""Process-wide media counters, read by the metrics endpoint at scrape time.

Plain module globals: the hot path adds to them without a lookup chain or a lock (one event loop).
"""

from __future__ import annotations

from collections.abc import Callable

rtp_packets_received = 0
rtp_packets_sent = 0
rtp_sent_bytes = 0  # RTP header + payload, before SRTP: see Publication._forward
retransmissions = 0
retransmissions_suppressed = 0  # NACKed packets not resent: media/nackguard.py
redundant_copies = 0  # copies of frames' last packets for lossy viewers: media/redundancy.py
keyframe_requests_upstream = 0  # PLIs we sent to publishers
keyframe_requests_downstream = 0  # PLI/FIR we received from subscribers
send_errors = 0
remb_received = 0  # REMB (receiver estimated maximum bitrate) from viewers: media/bwe.py
probes_started = 0  # padding probes towards viewers (media/bwe.py, Probe) ...
probes_succeeded = 0  # ... that went through clean (an up-switch followed)
padding_packets_sent = 0  # their padding-only RTX packets
transport_feedback = 0  # transport feedback on probes' padding read (media/twcc.py) ...
probes_ended_by_delay = 0  # ... and probes it ended (the padding queued at the viewer's link)
link_datagrams_sent = 0  # forwarding link: datagrams main sent to media workers (media/link.py)
link_send_errors = 0  # ... and sends that failed (a worker's buffer full, or the worker gone)
media_worker_restarts = 0

# Counters of other processes (media workers) added at scrape time: callables returning name -> value.
providers: list[Callable[[], dict[str, int]]] = []


def snapshot() -> dict[str, int]:
    from media import aiortc_hooks, tasks, udpmux

    values = {
        "rtp_packets_received": rtp_packets_received,
        "rtp_packets_sent": rtp_packets_sent,
        "rtp_sent_bytes": rtp_sent_bytes,
        "retransmissions": retransmissions,
        "retransmissions_suppressed": retransmissions_suppressed,
        "redundant_copies": redundant_copies,
        "keyframe_requests_upstream": keyframe_requests_upstream,
        "keyframe_requests_downstream": keyframe_requests_downstream,
        "send_errors": send_errors,
        "remb_received": remb_received,
        "probes_started": probes_started,
        "probes_succeeded": probes_succeeded,
        "padding_packets_sent": padding_packets_sent,
        "transport_feedback": transport_feedback,
        "probes_ended_by_delay": probes_ended_by_delay,
        "send_drops": udpmux.send_drops,
        "unroutable_datagrams": udpmux.unroutable,
        "viewer_rtcp_packets": udpmux.rtcp_received,
        "viewer_rtcp_dropped": udpmux.rtcp_dropped,
        "decoded_frames": aiortc_hooks.decoded_frames,
        "task_failures": tasks.failures,
        "link_datagrams_sent": link_datagrams_sent,
        "link_send_errors": link_send_errors,
        "media_worker_restarts": media_worker_restarts,
    }
    for provider in providers:
        for name, value in provider().items():
            if name in values:
                values[name] += value
    return values
