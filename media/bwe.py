"""A viewer's bandwidth estimate and the layer decision made from it: pure, no I/O, the clock passed in.

What a viewer's browser tells us about its downlink (docs/architecture.md, "Bandwidth estimate"):

- **REMB** (draft-alvestrand-rmcat-remb, RTCP PSFB FMT 15), the browser's delay-based estimate of
  what it can receive, for all the media SSRCs it lists. It is a *cap*. Chromium never lets it climb
  above 1.5 x what it actually receives + 10 kbit/s (webrtc's AimdRateControl), so a REMB at that
  ceiling means "no congestion at the rate you send now", not "this is all I can take": then the
  cap is not binding and the estimate may grow past it (an up-switch is the probe; a failed one is
  backed off, see ``LayerChooser``).
- **Receiver reports** (RFC 3550 §6.4.2): the fraction of packets lost since the last report, per
  video slot. Loss above ``loss_high`` lowers the estimate (x (1 - loss / 2)), loss below ``loss_low``
  lets it grow (x ``growth_per_s`` per second), in between it holds (the loss-based controller of
  Google congestion control, draft-ietf-rmcat-gcc-02 §6).

``Estimate`` keeps that figure for one viewer; ``Bandwidth`` splits it into a budget per video slot
(audio first: audio is never dropped before video); ``LayerChooser`` (one per video slot) turns a
budget into a layer with hysteresis: down quickly, up slowly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from media.bweconfig import BweConfig, Preference

__all__ = ["Bandwidth", "BweConfig", "Estimate", "LayerChooser", "Preference", "Probe", "ViewerLayers"]


class Estimate:
    """One viewer's downlink estimate in bits per second, from its REMB and receiver-report loss."""

    __slots__ = (
        "bound_at",
        "ceiling_since",
        "config",
        "congested_at",
        "copies_until",
        "loss",
        "loss_at",
        "loss_binds",
        "loss_bps",
        "loss_slow",
        "media_bps",
        "probe_span",
        "remb_at",
        "remb_bps",
        "remb_dropped_at",
        "remb_first",
        "sent_bps",
    )

    def __init__(self, config: BweConfig | None = None) -> None:
        self.config = config or BweConfig()
        self.loss_bps = self.config.initial_bps  # the loss-based estimate
        self.remb_bps: float | None = None
        self.remb_at = 0.0
        self.ceiling_since: float | None = None  # every REMB since then was at Chromium's ceiling
        self.sent_bps: float | None = None  # what we sent the viewer lately (None: unknown)
        self.media_bps: float | None = None  # ... of it media (no padding, no copies)
        self.loss = 0.0  # fraction lost (0..1) over about the last ``loss_window_s`` of reports
        self.loss_slow = 0.0  # the same over about ``loss_slow_window_s``: is the loss lasting
        self.loss_at: float | None = None  # when ``loss`` was reported
        self.loss_binds = False  # ``loss`` >= loss_high, not a failed probe's: the REMB caps meanwhile
        self.remb_dropped_at: float | None = None  # the last REMB below the one before (or the first)
        self.remb_first = False  # ``remb_dropped_at`` is the first REMB's: none dropped since
        self.congested_at: float | None = None  # the last congestion signal: a REMB drop, loss
        self.copies_until = 0.0  # copies of frames' last packets until then (``copies``)
        self.bound_at: float | None = None  # the last report whose loss bound (congestion)
        # The last failed padding probe, from its start to its end + ``probe_report_s``: loss
        # reported then is the padding's doing (``ViewerLayers``), it shrinks nothing.
        self.probe_span = (0.0, -1.0)

    def on_remb(self, bitrate_bps: float, now: float) -> None:
        bitrate = max(0.0, float(bitrate_bps))
        previous = self.remb_bps
        if previous is None or bitrate < previous * (1.0 - self.config.remb_drop):
            self.remb_dropped_at = now
            self.remb_first = previous is None
            if previous is not None:
                self.congested_at = now
        self.remb_bps = bitrate
        self.remb_at = now
        if not self.remb_has_room(now):
            self.copies_until = 0.0  # a queue builds up (below): copies would keep it full
        sent = self.sent_bps
        if sent is not None and sent > 0 and self.remb_bps >= self.config.remb_ceiling * sent:
            if self.ceiling_since is None:
                self.ceiling_since = now
        else:
            self.ceiling_since = None

    def on_sent(self, sent_bps: float, media_bps: float | None = None) -> None:
        """What the viewer was sent over the last interval (tells a binding REMB from a ceiling),
        and how much of it was media (``sent_bps`` when not given)."""
        self.sent_bps = max(0.0, float(sent_bps))
        self.media_bps = self.sent_bps if media_bps is None else max(0.0, float(media_bps))

    def on_loss(self, fraction_lost: float, now: float) -> None:
        """A receiver report's fraction lost (0..1). Growth is per second elapsed, so several slots
        reporting at once do not multiply it."""
        c = self.config
        weight = 1.0 if self.loss_at is None else min(1.0, max(now - self.loss_at, 0.0) / c.loss_window_s)
        fraction = min(1.0, max(0.0, fraction_lost))
        loss = self.loss + (fraction - self.loss) * weight
        self.loss = loss
        slow_weight = 1.0 if self.loss_at is None else weight * c.loss_window_s / c.loss_slow_window_s
        self.loss_slow += (fraction - self.loss_slow) * min(1.0, slow_weight)
        lasting = self.loss_slow >= c.loss_high
        if loss >= c.loss_low:
            self.congested_at = now
        elapsed = 1.0 if self.loss_at is None else min(max(now - self.loss_at, 0.0), 2.0)
        in_probe = self.probe_span[0] <= now <= self.probe_span[1]
        self.loss_binds = loss >= c.loss_high and lasting and not in_probe
        if in_probe:
            pass  # the failed probe's padding lost it: the estimate holds
        elif loss > c.loss_high and lasting:
            # Shrink to what got through when we know what was sent (the estimate may have grown far
            # above anything sent while REMB capped it), else by GCC's x (1 - loss / 2).
            if self.sent_bps is None:
                self.loss_bps *= 1.0 - 0.5 * loss
            else:
                self.loss_bps = min(self.loss_bps, self.sent_bps) * (1.0 - 0.5 * loss)
        elif loss >= c.loss_low:
            # The hold region: what is being sent gets through with a loss that retransmissions
            # repair. Holding the estimate alone is a ratchet under steady random loss: every report
            # that happens to land above ``loss_high`` shrinks it below what is sent, and nothing in
            # here lets it back (tests/e2e/test_impairment.py: 5 % random loss took a viewer from
            # 180p to 90p for good, and its decoded frames below 95 %).
            if self.sent_bps is not None:
                self.loss_bps = max(self.loss_bps, self.sent_bps)
        else:
            self.loss_bps *= c.growth_per_s**elapsed
            if self.sent_bps is not None:
                # What was sent got through: the link carries at least that (the estimate shrank
                # at the last congestion, and would otherwise take seconds to climb back to it).
                self.loss_bps = max(self.loss_bps, self.sent_bps)
        self.loss_bps = min(c.max_bps, max(c.min_bps, self.loss_bps))
        self.loss_at = now
        held = c.loss_low <= self.loss_slow < c.loss_high
        if self.loss_binds:
            self.copies_until = 0.0  # congestion: copies would add to it
            self.bound_at = now
        elif (
            held
            and (self.bound_at is None or now - self.bound_at >= c.copies_hold_s)
            and (self.remb_dropped_at is None or now - self.remb_dropped_at >= c.remb_hold_s)
            and self.remb_has_room(now)
        ):
            # Random loss, not a filling queue: no lasting loss within ``copies_hold_s``, no REMB
            # drop (Chromium's delay signal) within ``remb_hold_s`` and a REMB with room over the
            # media. A capped link's loss sits in the hold region for seconds while its queue
            # fills, and copies there kept it congested and the viewer on its layer
            # (tests/e2e/test_impairment.py's cap).
            self.copies_until = now + c.copies_hold_s

    def remb_has_room(self, now: float) -> bool:
        """Whether the viewer's REMB (if it sends a recent one) is over the media we send it by
        ``copies_remb_room``. Chromium's REMB sits at 1.5 x what it receives while its delay stays
        flat, random loss or not; below the media rate, it saw a queue grow (and lags after that:
        a capped viewer's held ≈ 50 kbit/s under 200 kbit/s of media for tens of seconds, while
        copies switched on by a hold-region loss kept the cap's queue full: 10 fps)."""
        c = self.config
        if self.remb_bps is None or now - self.remb_at > c.remb_stale_s or not self.media_bps:
            return True
        return self.remb_bps >= c.copies_remb_room * self.media_bps

    def copies(self, now: float) -> bool:
        """Whether the viewer's video should carry a copy of each frame's last packet
        (media/redundancy.py): lasting loss in the hold region within ``copies_hold_s``."""
        return now < self.copies_until

    def remb_binding(self, now: float) -> bool:
        """Whether the last REMB caps the estimate: recent, dropped (or first came, well below the
        media sent) within ``remb_hold_s`` or the last report's loss is high, and not steadily at
        Chromium's own ceiling over what we send (there it only says the current rate is fine). A
        REMB that has held or climbed since is Chromium's slow ramp, no cap (measured: 57 kbit/s
        held 10 s while 200 kbit/s got through without loss)."""
        c = self.config
        if self.remb_bps is None or now - self.remb_at > c.remb_stale_s:
            return False
        dropped = self.remb_dropped_at is not None and now - self.remb_dropped_at < c.remb_hold_s
        lossless = self.congested_at is None or now - self.congested_at >= c.remb_hold_s
        if dropped and self.remb_first and lossless and self.media_bps:
            # Chromium's first REMB comes ~5 s after the media, set to the throughput it measured and
            # climbing 8 %/s from there: at about what it receives, on a link that lost nothing
            # lately (no report >= loss_low within remb_hold_s), it says that much gets through, no
            # cap (bench/impairment.py: unimpaired viewers joining on 720p went down to 360p for
            # 3-6 s on it). Well below what it receives, it saw a queue: it binds. After loss it
            # binds too, as before: a lossy link is better served by a lower layer (fewer packets a
            # frame to lose; 5 % loss, kept on 720p: 94.8-98.8 % decoded in 9 runs, median 96.8 %,
            # against 97.8 % with this binding).
            dropped = self.remb_bps < c.remb_first_room * self.media_bps
        if not dropped and not self.loss_binds:
            return False
        since = self.ceiling_since
        return since is None or now - since < c.ceiling_after_s

    def quiet(self, now: float) -> bool:
        """No congestion signal for ``probe_quiet_s`` and the last loss report (if that recent) below
        ``loss_low`` (a viewer held on audio only reports no video loss: an old report is no news)."""
        c = self.config
        since = self.congested_at
        recent = self.loss_at is not None and now - self.loss_at < c.probe_quiet_s
        lossy = recent and self.loss >= c.loss_low
        return not lossy and (since is None or now - since >= c.probe_quiet_s)

    def probed(self, bitrate_bps: float, now: float) -> None:
        """Padding took the rate to ``bitrate_bps`` without a congestion signal: the link carries it."""
        self.loss_bps = min(self.config.max_bps, max(self.loss_bps, bitrate_bps))
        self.remb_dropped_at = None

    def value(self, now: float) -> float:
        """The estimate in bit/s."""
        if self.remb_binding(now) and self.remb_bps is not None:
            return min(self.loss_bps, self.remb_bps)
        return self.loss_bps


@dataclass(slots=True)
class LayerChooser:
    """One video slot's layer decision, with hysteresis. ``choose`` is called whenever a decision may
    change (a report arrived, a layer went live or away, a keyframe is near); it returns the layer to
    forward (an index into the group's layers, lowest first) or None: audio only."""

    config: BweConfig = field(default_factory=BweConfig)
    below_since: float | None = None  # the budget has been below the current layer since
    above_since: float | None = None  # the budget has been above the next layer (x margin) since
    up_wait_s: float = 0.0  # the current wait before an up-switch (backs off)
    last_up_at: float | None = None
    switched_at: float | None = None
    down_at: float | None = None  # the last switch down (or to audio only)
    switches: int = 0
    decided: bool = False  # the first choice is made without hysteresis
    wants: int | None = None  # the layer an up-switch would take (``blind_up`` off: a probe's target)

    def __post_init__(self) -> None:
        self.up_wait_s = self.config.up_after_s

    def choose(
        self,
        preference: Preference | str,
        layer_bitrates_bps: list[float],
        live: list[bool],
        current: int | None,
        now: float,
        budget_bps: float,
        loss: float = 0.0,
        loss_at: float | None = None,
        blind_up: bool = True,
    ) -> int | None:
        """``budget_bps``: what this slot's video may take; ``loss``: the viewer's last fraction
        lost (0..1), reported at ``loss_at`` (a report from before the last switch describes the
        layer that was left, and is not acted on again). ``blind_up`` off (padding probes possible):
        an up-switch is never made here, the layer it would take is left in ``wants`` for a probe.

        None (audio only) comes from the lowest layer only, and only when that layer itself loses
        besides a budget below it (``heavy_loss`` at once, ``loss_high`` after ``down_after_s``): a
        budget below it from a REMB alone keeps it (Chromium's REMB lags far below what gets through
        after a drop)."""
        c = self.config
        self.wants = None
        if loss_at is not None and self.switched_at is not None and loss_at <= self.switched_at:
            loss = 0.0
        if loss_at is not None and self.down_at is not None and loss_at <= self.down_at + c.switch_report_s:
            loss = 0.0  # still the layer left (forwarded until the target's keyframe)
        preference = Preference(preference)
        live_layers = [i for i, up in enumerate(live) if up and i < len(layer_bitrates_bps)]
        if preference is Preference.AUDIO or not live_layers:
            return self._to(current, None, now)
        if preference is Preference.HIGH:
            return self._to(current, live_layers[-1], now)
        if preference is Preference.LOW:
            return self._to(current, live_layers[0], now)
        fits = [i for i in live_layers if layer_bitrates_bps[i] <= budget_bps]
        target = fits[-1] if fits else None
        if current is not None and current not in live_layers:
            # The layer went away (its encoding stopped): the best that fits now, no waiting.
            return self._to(current, live_layers[0] if target is None else target, now)
        if not self.decided:
            self.decided = True
            return self._to(current, live_layers[0] if target is None else target, now)  # no hysteresis
        if (
            self.last_up_at is not None
            and now - self.last_up_at > c.probe_window_s
            and (self.switched_at is None or self.switched_at <= self.last_up_at)
        ):
            self.up_wait_s = c.up_after_s  # the last up-switch held: the next waits the normal time
        rate = layer_bitrates_bps[current] if current is not None else 0.0
        # Down: the budget has been below the current layer long enough, or loss is heavy.
        if current is not None and (rate > budget_bps or loss >= c.heavy_loss):
            self.above_since = None
            if self.below_since is None:
                self.below_since = now
            if loss >= c.heavy_loss or now - self.below_since >= c.down_after_s:
                lower = target
                if loss >= c.heavy_loss and lower is not None and lower >= current:
                    lower = max((i for i in live_layers if i < current), default=None)
                if lower is None and current != live_layers[0]:
                    lower = live_layers[0]  # audio only is decided on the lowest layer's own loss
                elif lower is None and loss < c.loss_high:
                    # Without loss the budget is a REMB's: it never holds the video back on its own
                    # (after a drop Chromium's REMB lags far below what gets through).
                    return current
                return self._to(current, lower, now)
            return current
        self.below_since = None
        # Up: the budget steadily above a higher layer's rate with a margin.
        ups = [
            i
            for i in live_layers
            if (current is None or i > current) and layer_bitrates_bps[i] * c.up_margin <= budget_bps
        ]
        if not ups or loss >= c.loss_high:
            self.above_since = None
            return current
        if not blind_up:
            self.wants = ups[-1]
            return current
        if self.above_since is None:
            self.above_since = now
        if now - self.above_since >= self.up_wait_s:
            return self._to(current, ups[-1], now)
        return current

    def _to(self, current: int | None, target: int | None, now: float) -> int | None:
        if target == current:
            return current
        c = self.config
        going_up = target is not None and (current is None or target > current)
        if not going_up:
            self.down_at = now
        if going_up:
            self.last_up_at = now
        elif self.last_up_at is not None:
            if now - self.last_up_at <= c.probe_window_s:
                self.up_wait_s = min(self.up_wait_s * 2, c.up_backoff_max_s)  # that up-switch failed
            else:
                self.up_wait_s = c.up_after_s  # it held: the next one waits the normal time
        self.below_since = self.above_since = None
        self.switched_at = now
        self.switches += 1
        return target


@dataclass(slots=True)
class Probe:
    """Padding towards one viewer that takes what it receives to a higher layer's rate before that
    layer is forwarded: one step per layer climbed (``probe_first_step_s``, then ``probe_step_s``
    each), lowest first. Any congestion signal meanwhile (a NACK, a REMB drop, a loss report >=
    ``loss_low``) ends it; the layer of the last step that went through, if any, is taken."""

    participant_id: str  # whose video slot it is for (the padding goes on that slot's RTX stream)
    current: int | None  # the layer forwarded meanwhile
    layers: list[int]  # the layers climbed, lowest first
    padding_bps: list[float]  # padding per step: the step's layer rate x up_margin - current's rate
    started_at: float
    step: int = 0
    step_at: float = 0.0


class Bandwidth:
    """A viewer's estimate and its split: audio's share first, the rest evenly over the video slots
    that want video."""

    __slots__ = ("config", "estimate")

    def __init__(self, config: BweConfig | None = None) -> None:
        self.config = config or BweConfig()
        self.estimate = Estimate(self.config)

    def video_budget(self, now: float, audio_tracks: int, video_tracks: int) -> float:
        """Bits per second for each of ``video_tracks`` video slots once ``audio_tracks`` audio tracks
        are paid for (0 when audio alone takes it all: then every video slot is below its lowest
        layer and goes audio-only before any audio is touched)."""
        left = self.estimate.value(now) - audio_tracks * self.config.audio_bps
        if video_tracks <= 0 or left <= 0:
            return 0.0
        return left / video_tracks


class ViewerLayers:
    """Everything one viewer's layer decisions need: its ``Bandwidth``, its preferences (one for
    every speaker, and per speaker where it named one) and one ``LayerChooser`` per speaker.

    ``choose(participant_id, layer_bitrates_bps, live, current, now)`` is the decision the layer
    switching calls for the speaker's video in this viewer's slot (docs/architecture.md)."""

    __slots__ = (
        "bandwidth",
        "choosers",
        "next_probe_at",
        "partial",
        "preference",
        "preferences",
        "probe",
        "probe_backoff_max_s",
        "probe_wait_s",
        "probes",
        "probes_ok",
    )

    def __init__(self, config: BweConfig | None = None) -> None:
        self.bandwidth = Bandwidth(config)
        self.preference = Preference.AUTO
        self.preferences: dict[str, Preference] = {}  # per speaker, over ``preference``
        self.choosers: dict[str, LayerChooser] = {}
        self.probe: Probe | None = None  # one at a time per viewer
        self.partial: tuple[Probe, int] | None = None  # a failed probe, and the last layer it passed
        self.probe_wait_s = self.bandwidth.config.probe_backoff_s
        self.probe_backoff_max_s = self.bandwidth.config.probe_backoff_max_s
        self.next_probe_at = 0.0
        self.probes = self.probes_ok = 0  # started, succeeded (figures, tests)

    def set_preference(self, preference: Preference | str, participant_id: str | None = None) -> None:
        """A viewer-wide preference replaces every per-speaker one; a speaker's overrides it for them."""
        preference = Preference(preference)
        if participant_id is None:
            self.preference = preference
            self.preferences.clear()
        elif preference is self.preference:
            self.preferences.pop(participant_id, None)
        else:
            self.preferences[participant_id] = preference

    def preference_for(self, participant_id: str) -> Preference:
        return self.preferences.get(participant_id, self.preference)

    def wants_video(self, participant_id: str) -> bool:
        return self.preference_for(participant_id) is not Preference.AUDIO

    def forget(self, participant_id: str) -> None:
        """The speaker's video left this viewer: its decision starts afresh next time."""
        self.choosers.pop(participant_id, None)
        if self.probe is not None and self.probe.participant_id == participant_id:
            self.probe = None

    # --- padding probes ------------------------------------------------------------------------

    def padding_bps(self, now: float) -> tuple[str, float] | None:
        """The padding to send now: (the speaker whose video slot carries it, bit/s), or None (also
        from the first congestion signal on: the probe has failed, the next decision says so)."""
        probe = self.probe
        if probe is None:
            return None
        congested = self.bandwidth.estimate.congested_at
        if congested is not None and congested >= probe.started_at:
            return None
        return probe.participant_id, probe.padding_bps[probe.step]

    def on_nack(self, now: float) -> None:
        """The viewer asked for a retransmission: a loss, so a probe running now fails at once."""
        if self.probe is not None:
            self.bandwidth.estimate.congested_at = now
            self._probe_failed(now)

    def delay_signal(self) -> None:
        """The probes' padding reports its delay (media/twcc.py): a probe over a cap ends before
        anything is dropped and costs the viewer little, so the next one may come sooner (a lifted
        cap is found sooner)."""
        self.probe_backoff_max_s = self.bandwidth.config.probe_backoff_delay_max_s

    def on_delay(self, now: float) -> None:
        """The probe's padding queues at the viewer's bottleneck (media/twcc.py): it fails now,
        before the queue overflows."""
        self.on_nack(now)

    def _start_probe(self, probe: Probe) -> None:
        self.probe = probe
        self.probes += 1
        # Loss reported while it runs may be its padding's doing: it shrinks no estimate.
        self.bandwidth.estimate.probe_span = (probe.started_at, float("inf"))

    def _probe_failed(self, now: float) -> None:
        probe = self.probe
        if probe is not None:
            span = (probe.started_at, now + self.bandwidth.config.probe_report_s)
            self.bandwidth.estimate.probe_span = span
            if probe.step > 0:
                self.partial = (probe, probe.layers[probe.step - 1])
        self.probe = None
        self.next_probe_at = now + self.probe_wait_s
        self.probe_wait_s = min(self.probe_wait_s * 2, self.probe_backoff_max_s)

    def _probing(
        self,
        participant_id: str,
        chooser: LayerChooser,
        layer_bitrates_bps: list[float],
        live: list[bool],
        current: int | None,
        target: int | None,
        now: float,
    ) -> int | None:
        """A probe's progress for this speaker's slot; the layer to forward (``target`` unless a
        probe just succeeded)."""
        c = self.bandwidth.config
        estimate = self.bandwidth.estimate
        probe = self.probe
        if probe is not None and probe.participant_id == participant_id:
            congested = estimate.congested_at is not None and estimate.congested_at >= probe.started_at
            if congested:
                self._probe_failed(now)
            elif target != current or probe.current != current or not live[probe.layers[-1]]:
                self._probe_failed(now)  # the decision moved on meanwhile (down, a layer gone)
                self.partial = None
                return target
            else:
                step_s = c.probe_first_step_s if probe.step == 0 else c.probe_step_s
                if now - probe.step_at < step_s:
                    return target
                probe.step += 1
                probe.step_at = now
                if probe.step < len(probe.layers):
                    return target
                self.probe = None
                self.bandwidth.estimate.probe_span = (0.0, -1.0)
                self.partial = (probe, probe.layers[-1])
        partial = self.partial
        if partial is not None and partial[0].participant_id == participant_id:
            # Up to the last layer whose step went through (all of them: a success).
            self.partial = None
            passed, layer = partial
            if passed.current == current == target and live[layer]:
                self.probes_ok += 1
                if layer == passed.layers[-1]:
                    self.probe_wait_s = c.probe_backoff_s
                self.next_probe_at = max(self.next_probe_at, now + c.probe_after_switch_s)
                estimate.probed(layer_bitrates_bps[layer] * c.up_margin, now)
                return chooser._to(current, layer, now)
        if chooser.switched_at is not None:
            self.next_probe_at = max(self.next_probe_at, chooser.switched_at + c.probe_after_switch_s)
        wants = chooser.wants
        lowest = next((i for i, up in enumerate(live) if up), None)
        if target == current and (chooser.below_since is None or current in (None, lowest)):
            # Up to the top live layer, a step per layer, whatever the estimate says (it shrank at
            # the last congestion and grows 30 %/s from there; held on audio only, it gets no report
            # at all): the probe is the test, and one probe climbs every layer the link carries.
            above = [i for i, up in enumerate(live) if up and (current is None or i > current)]
            wants = above[-1] if above else None
        if (
            probe is None
            and wants is not None
            and target == current
            and now >= self.next_probe_at
            and estimate.quiet(now)
        ):
            base = layer_bitrates_bps[current] if current is not None else 0.0
            layers = [
                i for i, up in enumerate(live) if up and (current is None or i > current) and i <= wants
            ]
            if layers:
                paddings = [max(0.0, layer_bitrates_bps[i] * c.up_margin - base) for i in layers]
                self._start_probe(Probe(participant_id, current, layers, paddings, now, step_at=now))
        return target

    def choose(
        self,
        participant_id: str,
        layer_bitrates_bps: list[float],
        live: list[bool],
        current: int | None,
        now: float,
        *,
        audio_tracks: int = 1,
        video_tracks: int = 1,
        can_probe: bool = False,
    ) -> int | None:
        """The layer of ``participant_id``'s video to forward to this viewer (index into
        ``layer_bitrates_bps``, lowest first), or None: audio only. ``audio_tracks`` and
        ``video_tracks``: how many of each the viewer receives (its budget is shared).
        ``can_probe``: padding can be sent on this slot (RTX negotiated): every up-switch then waits
        for a probe at the target's rate to go through clean (``Probe``, ``padding_bps``)."""
        chooser = self.choosers.get(participant_id)
        if chooser is None:
            chooser = self.choosers[participant_id] = LayerChooser(self.bandwidth.config)
        budget = self.bandwidth.video_budget(now, audio_tracks, video_tracks)
        preference = self.preference_for(participant_id)
        loss, loss_at = self.bandwidth.estimate.loss, self.bandwidth.estimate.loss_at
        span = self.bandwidth.estimate.probe_span
        if loss_at is not None and span[0] <= loss_at <= span[1]:
            loss = 0.0  # the failed probe's padding lost it
        target = chooser.choose(
            preference,
            layer_bitrates_bps,
            live,
            current,
            now,
            budget,
            loss,
            loss_at,
            blind_up=not (can_probe and preference is Preference.AUTO),
        )
        if not can_probe or preference is not Preference.AUTO:
            if self.probe is not None and self.probe.participant_id == participant_id:
                self.probe = None
            return target
        return self._probing(participant_id, chooser, layer_bitrates_bps, live, current, target, now)
