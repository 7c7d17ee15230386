"""Process-wide recording counters, read by the server's metrics collector at scrape time.

recording/ may not import server/ (the layers in pyproject.toml), so the counters are plain ints here,
as media.stats keeps its own. Unlike media's, they are written from the writer threads (one per
track, recording/writer.py): ``+=`` on a module global is not atomic across threads, so additions go
through a lock. That costs ≈ 0.1 µs per frame on a thread that spends microseconds muxing it, never on
the event loop.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
media_bytes_written = 0  # encoded frame bytes muxed into track files (the container's framing excluded)


def add_media_bytes(count: int) -> None:
    global media_bytes_written
    with _lock:
        media_bytes_written += count


def snapshot() -> dict[str, int]:
    """By metric name (server/metrics.py makes ``medstage_<name>_total`` of each)."""
    return {"recording_written_bytes": media_bytes_written}
