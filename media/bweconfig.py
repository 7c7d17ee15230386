"""The constants of the bandwidth estimate and of the layer decision (media/bwe.py), and a viewer's
layer preference: what the UI offers (Auto / High / Low / Audio only) and the protocol carries."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Preference(enum.StrEnum):
    """What a viewer asked for (``layer.set``): the decision's input, per viewer or per speaker."""

    AUTO = "auto"  # the estimate decides
    HIGH = "high"  # the highest live layer, whatever the estimate
    LOW = "low"  # the lowest live layer, whatever the estimate
    AUDIO = "audio"  # no video at all


@dataclass(frozen=True, slots=True)
class BweConfig:
    """The estimate's and the decision's constants (defaults: see docs/architecture.md)."""

    initial_bps: float = 1_000_000.0  # before the viewer reported anything
    min_bps: float = 30_000.0
    max_bps: float = 20_000_000.0
    loss_high: float = 0.10  # above: the estimate shrinks
    loss_low: float = 0.02  # below: it may grow
    heavy_loss: float = 0.25  # at or above: switch down without waiting
    loss_window_s: float = 1.0  # a report's fraction counts by the time it covers, out of this
    # The estimate shrinks only when the loss over this longer span is high too: a receiver report
    # covers ~30 packets of a low layer a second, so 5 % of random loss reads 10 % or more about one
    # report in five; a congested link's loss lasts, and passes loss_high here within a report or two.
    loss_slow_window_s: float = 3.0
    # (Chromium sends a receiver report with every NACK: 1 lost of 3 is "33 %" of 0.1 s)
    growth_per_s: float = 1.3  # x per second of low loss (REMB, when it binds, keeps it in check)
    remb_ceiling: float = 1.4  # REMB >= this x what we send: Chromium's own ceiling, not a cap
    remb_stale_s: float = 5.0  # a REMB older than this caps nothing
    ceiling_after_s: float = 2.0  # REMB at the ceiling this long (every one of them): not a cap
    audio_bps: float = 48_000.0  # reserved per audio track the viewer receives (Opus + overhead)
    down_after_s: float = 1.5  # the budget below the current layer this long: down
    up_margin: float = 1.3  # up only when the budget is above the next layer's rate x this
    up_after_s: float = 4.0  # ... steadily, this long
    up_backoff_max_s: float = 8.0  # a failed up-switch doubles the wait, up to this (a cap that
    # lifts is found within about this, see "Bandwidth estimate" in docs/architecture.md)
    probe_window_s: float = 8.0  # down again within this after an up-switch: it failed
    switch_report_s: float = 1.5  # a loss report this soon after a down-switch still covers the
    # layer left (it is forwarded until the target's keyframe; Chromium reports every 0.5-1.5 s)
    remb_drop: float = 0.05  # a REMB this much below the one before: Chromium saw congestion
    remb_first_room: float = 0.8  # the first REMB caps only below this x the media sent, on a
    # clean link (Chromium's first one is the throughput it measured; ``Estimate.remb_binding``)
    remb_hold_s: float = 3.0  # a REMB caps this long after it dropped (or first came); then it only
    # lags what gets through (Chromium climbs back at 8 %/s at most) and caps nothing
    # Padding probes (``Probe``; docs/architecture.md, "Bandwidth estimate"): a higher layer is taken
    # only once padding at its rate went through clean.
    probe_first_step_s: float = 2.0  # the first step (the next layer's rate) is held this long: a
    # link's buffer absorbs a probe's excess before anything is lost or delayed (the bench's tbf cap
    # holds ~40 KB: 1.6 s of a probe 200 kbit/s over it, which 1.2 s steps passed unnoticed)
    probe_step_s: float = 1.0  # each further step (a layer more: far more over any cap between)
    probe_quiet_s: float = 2.0  # no congestion signal for this long before a probe
    probe_after_switch_s: float = 1.0  # and none within this after a layer switch
    probe_backoff_s: float = 2.0  # a failed probe: the next one waits this, doubling ...
    probe_backoff_max_s: float = 6.0  # ... up to this (a lifted cap is found within about this)
    # ... or up to this when the probes' padding reports its delay (``ViewerLayers.delay_signal``):
    # a failed probe then ends 0.25-0.6 s in, before the cap's queue drops anything
    probe_backoff_delay_max_s: float = 4.0
    # Copies of each frame's last packet (media/redundancy.py) while the slow loss is in the hold
    # region [loss_low, loss_high), and this long after it last was: the copies hide the loss
    # they repair from the receiver reports, so they would flap on and off without it.
    copies_hold_s: float = 20.0
    copies_remb_room: float = 1.2  # ... and only while the REMB is this much over the media sent
    probe_report_s: float = 1.5  # loss reported this long after a failed probe is the padding's
    # doing (it ended at the first sign): it moves no layer (Chromium reports every 0.5-1.5 s)
