"""The composite export (issue 14): one playable file per session, built offline from the per-track
files, laid out (screen share, active speaker, grid), mixed, and limited to the tracks whose owners
granted ``share``. The only place that decodes and encodes media. See docs/recording.md,
"Composite export"."""

from recording.composite.export import CompositeExport, ExportBusy, Progress, is_up_to_date, read_state
from recording.composite.plan import ExportError
from recording.composite.video import VideoSettings

__all__ = [
    "CompositeExport",
    "ExportBusy",
    "ExportError",
    "Progress",
    "VideoSettings",
    "is_up_to_date",
    "read_state",
]
