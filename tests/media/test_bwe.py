"""media/bwe.py: the viewer's estimate and the layer decision, against scripted REMB and receiver
reports from a small model of a viewer's link (plain function calls, the clock is ours)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from media.bwe import Bandwidth, BweConfig, Estimate, LayerChooser, Preference, ViewerLayers

LAYERS = [150_000.0, 500_000.0, 1_500_000.0]  # a speaker's three encodings, lowest first
LIVE = [True, True, True]
AUDIO_BPS = 40_000.0
TICK = 0.1
INF = float("inf")


@dataclass
class Link:
    """A viewer's downlink as Chromium reports it. ``cap(t)``: its capacity in bit/s. REMB every
    0.5 s: below the capacity Chromium's delay-based estimate sits at its own ceiling (1.5 x what it
    receives + 10 kbit/s), above it at 0.85 x what gets through; ``remb(t, value)`` may replace it
    (noise). A receiver report every second with the fraction lost over the capacity.

    ``chromium``: the REMB as Chromium's AimdRateControl moves it instead: on overuse down to 0.85 x
    what gets through (never up), otherwise up by 8 % a second at most, under its ceiling (what
    bench/impairment.py showed: 57 kbit/s for 10 s while 200 kbit/s got through). ``can_probe``: the
    viewer's padding (``ViewerLayers.padding_bps``) is sent too, and a loss is NACKed at once."""

    cap: Callable[[float], float]
    remb: Callable[[float, float], float] = lambda t, value: value
    viewer: ViewerLayers = field(default_factory=ViewerLayers)
    current: int | None = None
    history: list[tuple[float, int | None]] = field(default_factory=list)
    t: float = 0.0
    chromium: bool = False
    can_probe: bool = False
    remb_value: float | None = None
    padding: list[tuple[float, float]] = field(default_factory=list)  # (t, bit/s) while probing
    interval: list[float] = field(default_factory=lambda: [0.0, 0.0])  # sent, lost since the report
    # Random loss on top of the capacity's: the fraction a receiver report says, drawn for each one
    # (e.g. a binomial count over the packets a report covers).
    random_loss: Callable[[], float] | None = None

    def run(self, until: float) -> None:
        estimate = self.viewer.bandwidth.estimate
        while self.t < until:
            t = self.t
            self.current = self.viewer.choose(
                "speaker", LAYERS, LIVE, self.current, t, can_probe=self.can_probe
            )
            self.history.append((t, self.current))
            sent = AUDIO_BPS + (LAYERS[self.current] if self.current is not None else 0.0)
            padding = self.viewer.padding_bps(t) if self.can_probe else None
            if padding is not None:
                sent += padding[1]
                self.padding.append((t, padding[1]))
            cap = self.cap(t)
            through = min(sent, cap)
            if sent > cap and self.can_probe:
                self.viewer.on_nack(t)
            step = round(t / TICK)
            if step % 5 == 0:
                estimate.on_sent(sent)
                ceiling = 1.5 * through + 10_000
                if not self.chromium:
                    value = ceiling if sent <= cap else 0.85 * through
                elif self.remb_value is None:
                    value = ceiling
                elif sent > cap:
                    value = min(self.remb_value, 0.85 * through)
                else:
                    value = min(self.remb_value * 1.08**0.5, ceiling)
                self.remb_value = value
                estimate.on_remb(self.remb(t, value), t)
            self.interval[0] += sent
            self.interval[1] += sent - through
            if step % 10 == 5 and (self.current is not None or not self.chromium):
                # (a held video slot gets no packets: Chromium reports no loss for it)
                lost = self.interval[1] / self.interval[0] if self.chromium else max(0.0, (sent - cap) / sent)
                if self.random_loss is not None:
                    lost = min(1.0, lost + self.random_loss())
                estimate.on_loss(lost, t)
                self.interval = [0.0, 0.0]
            self.t = round(t + TICK, 6)

    def layers_between(self, start: float, end: float) -> set[int | None]:
        return {layer for t, layer in self.history if start <= t < end}

    def switches_between(self, start: float, end: float) -> int:
        within = [layer for t, layer in self.history if start <= t < end]
        return sum(1 for a, b in itertools.pairwise(within) if a != b)

    def first_time(self, layer: int | None, after: float) -> float | None:
        return next((t for t, got in self.history if t >= after and got == layer), None)


def test_capped_to_300_kbits_the_viewer_is_on_the_low_layer_within_a_few_seconds() -> None:
    link = Link(cap=lambda t: 300_000.0)
    link.run(60.0)
    reached = link.first_time(0, 0.0)
    assert reached is not None and reached <= 3.0, link.history[:40]
    # From then on the low layer, apart from brief up-switches that find the cap still there (without
    # padding probes an up-switch is the probe): backed off (4 s, then 8 s), each undone at the next
    # receiver report.
    on_low = sum(1 for t, layer in link.history if t >= reached and layer == 0)
    assert on_low >= 0.9 * sum(1 for t, _ in link.history if t >= reached)
    assert link.layers_between(reached, 60.0) <= {0, 1, 2}
    assert None not in link.layers_between(reached, 60.0), "audio only is never needed at 300 kbit/s"
    probes = [t for t, layer in link.history if t >= reached and layer != 0]
    longest = _longest_run(link.history, reached, lambda layer: layer != 0)
    assert longest <= 1.2, f"a failed up-switch lasted {longest:.1f} s ({probes[:20]})"


def test_noisy_remb_does_not_make_the_layer_flap() -> None:
    rng = random.Random(13)
    # A REMB that binds (below Chromium's ceiling) and jumps +-20 % around 620 kbit/s every 0.5 s:
    # its budget crosses the middle layer's 500 kbit/s one REMB in five.
    link = Link(cap=lambda t: INF, remb=lambda t, value: 620_000.0 * (1 + rng.uniform(-0.2, 0.2)))
    link.run(60.0)
    assert link.layers_between(5.0, 60.0) == {1}, link.switches_between(0.0, 60.0)
    assert link.switches_between(5.0, 60.0) == 0
    # Without hysteresis the same REMB would switch layers dozens of times.
    rng2 = random.Random(13)
    naive = [_naive(620_000.0 * (1 + rng2.uniform(-0.2, 0.2))) for _ in range(120)]
    assert sum(1 for a, b in itertools.pairwise(naive) if a != b) >= 20


def test_when_the_cap_lifts_the_viewer_is_back_on_the_high_layer_within_10_s() -> None:
    link = Link(cap=lambda t: 300_000.0 if t < 40.0 else INF)
    link.run(60.0)
    assert link.layers_between(30.0, 40.0) >= {0}
    back = link.first_time(2, 40.0)
    assert back is not None and back - 40.0 <= 10.0, (back, link.history[390:520:5])
    assert link.layers_between(back, 60.0) == {2}, "and it stays there"


def test_under_an_extreme_cap_video_goes_and_audio_stays() -> None:
    # A Chromium viewer (RTX: padding probes). Without RTX an up-switch is the probe, and one into
    # this cap comes back down through the low layer: two receiver reports (test_bwe's others).
    link = Link(cap=lambda t: 120_000.0 if t < 20.0 else INF, can_probe=True)
    link.run(40.0)
    gone = link.first_time(None, 0.0)
    assert gone is not None and gone <= 3.0
    # Audio only, apart from padding probes that find the cap still there.
    assert (
        sum(1 for t, layer in link.history if gone <= t < 20.0 and layer is None)
        >= 0.8 * (20.0 - gone) / TICK
    )
    assert (
        _longest_run([h for h in link.history if h[0] < 20.0], gone, lambda layer: layer is not None) <= 1.2
    )
    # The budget left after audio is what video gets: with 1 audio track, 100 kbit/s leaves 52.
    bandwidth = Bandwidth()
    bandwidth.estimate.on_remb(100_000, 0.0)
    assert bandwidth.video_budget(0.0, audio_tracks=1, video_tracks=1) == pytest.approx(52_000)
    assert bandwidth.video_budget(0.0, audio_tracks=3, video_tracks=1) == 0.0
    # And once the cap lifts, video comes back, the high layer within 10 s.
    back = link.first_time(2, 20.0)
    assert back is not None and back - 20.0 <= 10.0


def test_the_budget_is_shared_between_the_speakers_a_viewer_receives() -> None:
    viewer = ViewerLayers()
    viewer.bandwidth.estimate.on_remb(1_200_000, 0.0)
    one = viewer.choose("a", LAYERS, LIVE, None, 0.0, audio_tracks=1, video_tracks=1)
    three = viewer.choose("b", LAYERS, LIVE, None, 0.0, audio_tracks=3, video_tracks=3)
    assert (one, three) == (1, 0)  # 1.15 Mbit/s for one video; 352 kbit/s each for three


@pytest.mark.parametrize(("preference", "expected"), [("high", 2), ("low", 0), ("audio", None), ("auto", 0)])
def test_a_pinned_preference_wins_over_the_estimate(preference: str, expected: int | None) -> None:
    viewer = ViewerLayers()
    viewer.bandwidth.estimate.on_remb(250_000, 0.0)
    viewer.set_preference(preference)
    assert viewer.choose("a", LAYERS, LIVE, None, 0.0) == expected


def test_pinned_layers_take_the_nearest_live_one_and_none_live_means_audio() -> None:
    chooser = LayerChooser()
    assert chooser.choose(Preference.HIGH, LAYERS, [True, True, False], 0, 0.0, 10e6) == 1
    assert chooser.choose(Preference.LOW, LAYERS, [False, True, True], 1, 0.0, 10e6) == 1
    assert chooser.choose(Preference.AUTO, LAYERS, [False, False, False], 1, 0.0, 10e6) is None


def test_a_per_speaker_preference_overrides_the_viewers_and_a_viewer_wide_one_resets_them() -> None:
    viewer = ViewerLayers()
    viewer.set_preference("low")
    viewer.set_preference("audio", "a")
    assert (viewer.preference_for("a"), viewer.preference_for("b")) == (Preference.AUDIO, Preference.LOW)
    assert not viewer.wants_video("a") and viewer.wants_video("b")
    viewer.set_preference("high")
    assert viewer.preference_for("a") is Preference.HIGH


def test_heavy_loss_goes_down_at_once_and_moderate_loss_after_the_hold() -> None:
    config = BweConfig()
    chooser = LayerChooser(config)
    assert chooser.choose("auto", LAYERS, LIVE, None, 0.0, 3e6) == 2
    assert chooser.choose("auto", LAYERS, LIVE, 2, 1.0, 3e6, loss=0.3) == 1
    chooser = LayerChooser(config)
    assert chooser.choose("auto", LAYERS, LIVE, None, 0.0, 3e6) == 2
    assert chooser.choose("auto", LAYERS, LIVE, 2, 1.0, 1e6) == 2  # below for 0 s
    assert chooser.choose("auto", LAYERS, LIVE, 2, 2.0, 1e6) == 2  # 1 s
    assert chooser.choose("auto", LAYERS, LIVE, 2, 2.6, 1e6) == 1  # 1.6 s: down


def test_the_estimate_follows_loss_and_remb_caps_it() -> None:
    estimate = Estimate(BweConfig(initial_bps=1e6))
    estimate.on_loss(0.0, 0.0)
    estimate.on_loss(0.0, 1.0)
    assert estimate.value(1.0) == pytest.approx(1e6 * 1.3**2)
    estimate.on_loss(0.05, 2.0)  # between 2 % and 10 %: holds
    assert estimate.value(2.0) == pytest.approx(1e6 * 1.3**2)
    estimate.on_loss(0.2, 3.0)  # one report: not lasting (over 3 s the loss is below 10 %), holds
    assert estimate.value(3.0) == pytest.approx(1e6 * 1.3**2)
    estimate.on_loss(0.2, 4.0)  # lasting; nothing known of what was sent: x (1 - 0.1)
    assert estimate.value(4.0) == pytest.approx(1e6 * 1.3**2 * 0.9)
    estimate.on_sent(400_000)
    estimate.on_loss(0.5, 5.0)  # from what was sent (400 kbit/s, below the estimate): x (1 - 0.25)
    assert estimate.value(5.0) == pytest.approx(300_000)
    estimate.on_remb(150_000, 5.0)
    assert estimate.value(5.0) == 150_000
    assert estimate.value(11.0) == pytest.approx(300_000), "a stale REMB caps nothing"


def test_a_remb_steadily_at_chromiums_ceiling_stops_capping() -> None:
    estimate = Estimate(BweConfig(initial_bps=2e6))
    estimate.on_sent(200_000)
    estimate.on_remb(400_000, -1.0)
    estimate.on_remb(310_000, 0.0)  # dropped, to 1.5 x 200 + 10: the ceiling
    assert estimate.value(0.0) == 310_000
    estimate.on_remb(310_000, 1.0)
    estimate.on_remb(305_000, 2.0)
    assert estimate.value(2.0) == 2e6  # 2 s at the ceiling
    estimate.on_remb(250_000, 2.5)  # below it once: it binds again
    assert estimate.value(2.5) == 250_000


def test_chromiums_first_remb_at_what_it_receives_without_loss_is_no_cap_otherwise_it_is() -> None:
    # bench/impairment.py, traced: a viewer joining on the 720p layer (~750 kbit/s + audio) got its
    # first REMB 5 s in at about what it received (670-790 kbit/s), climbing 2 % every 0.25 s; as a
    # cap it held the viewer's budget just under 720p, and it went down to 360p for 3-6 s.
    link = Link(
        cap=lambda t: INF,
        remb=lambda t, value: 1_400_000.0 * 1.08 ** max(0.0, t - 5.0),
        viewer=ViewerLayers(BweConfig(initial_bps=2e6)),
    )
    link.run(30.0)
    assert link.layers_between(0.0, 30.0) == {2}, link.switches_between(0.0, 30.0)
    # The same REMB well below what is received (a link that queues): it binds, at once.
    estimate = Estimate(BweConfig(initial_bps=2e6))
    estimate.on_sent(1_540_000)
    estimate.on_remb(600_000, 0.0)
    assert estimate.value(0.0) == 600_000
    # At what is received but on a lossy link: it binds (a lower layer loses fewer frames there).
    lossy = Estimate(BweConfig(initial_bps=2e6))
    lossy.on_sent(1_540_000)
    for t in (0.0, 1.0, 2.0):
        lossy.on_loss(0.05, t)
    lossy.on_remb(1_400_000, 2.0)
    assert lossy.value(2.0) == 1_400_000
    # Nothing known of what was sent yet: a first REMB binds (the next one, 0.25 s later, tells).
    unknown = Estimate(BweConfig(initial_bps=2e6))
    unknown.on_remb(1_400_000, 0.0)
    assert unknown.value(0.0) == 1_400_000
    unknown.on_sent(1_540_000)
    unknown.on_remb(1_420_000, 0.25)
    assert unknown.value(0.25) == 2e6


def _probe_starts(link: Link) -> list[float]:
    """When each probe's padding began (a tick without padding separates two probes)."""
    pads = link.padding
    return [t for i, (t, _) in enumerate(pads) if i == 0 or t - pads[i - 1][0] > 1.5 * TICK]


def _naive(remb: float) -> int | None:
    fits = [i for i, rate in enumerate(LAYERS) if rate <= remb - 48_000]
    return fits[-1] if fits else None


def _longest_run(
    history: list[tuple[float, int | None]], start: float, test: Callable[[int | None], bool]
) -> float:
    longest = run = 0.0
    for t, layer in history:
        if t < start:
            continue
        run = run + TICK if test(layer) else 0.0
        longest = max(longest, run)
    return longest


async def test_a_subscriber_measures_what_it_sent_between_rembs_and_ignores_repeats() -> None:
    from tests.media.peers import loopback_ice, new_subscriber

    class Pub:
        participant_id = "speaker"
        octets = 0
        packets = 0

    with loopback_ice():
        sub = new_subscriber(slots=1)
    try:
        slot, pub = sub.pairs[0].video, Pub()
        slot.publication, slot.last_sent_at = pub, 0.0  # type: ignore[assignment]
        sub.on_remb(1_000_000, now=10.0)
        pub.octets, pub.packets = 125_000 - 12 * 100, 100  # 1 Mbit in 1 s, headers included
        sub.on_remb(900_000, now=11.0)
        sub.on_remb(900_000, now=11.001)  # the same REMB through another slot: no measure
        stats = sub.stats(now=11.0)
        assert stats["sent_bps"] == 1_000_000 and stats["remb_bps"] == 900_000
        assert stats["estimate_bps"] == 900_000 and stats["preference"] == "auto"
        sub.on_loss(128, now=12.0)  # half lost: what got through, x (1 - 0.25) of what was sent
        assert sub.stats(now=12.0)["loss"] == 0.5
        assert sub.stats(now=12.0)["estimate_bps"] == 750_000
    finally:
        await sub.pc.close()


# --- padding probes (a Chromium viewer: RTX negotiated, REMB as Chromium moves it) ----------------


def test_under_a_cap_probes_replace_up_switches_and_a_lifted_cap_is_found_within_10_s() -> None:
    link = Link(cap=lambda t: 300_000.0 if t < 40.0 else INF, chromium=True, can_probe=True)
    link.run(40.0)
    reached = link.first_time(0, 0.0)
    assert reached is not None and reached <= 3.0, link.history[:40]
    # Never above the low layer again while the cap lasts: each probe found the cap with padding
    # (ended at the first NACK) and the next one waited longer, up to 6 s.
    assert link.layers_between(reached, 40.0) == {0}
    assert link.viewer.probes >= 4 and link.viewer.probes_ok == 0
    gaps = [b - a for a, b in itertools.pairwise(_probe_starts(link))]
    assert max(gaps) <= BweConfig().probe_backoff_max_s + 0.5, gaps
    assert sum(1 for t, _ in link.padding if t >= 20.0) * TICK <= 0.3 * 20 / 6 + 0.2, "probes are short"
    link.run(60.0)
    back = link.first_time(2, 40.0)
    assert back is not None and back - 40.0 <= 10.0, (back, link.history[390:520:5])
    assert link.layers_between(back, 60.0) == {2}, "and it stays there"
    assert link.viewer.probes_ok == 1, "one probe climbed the two layers (a step per layer)"


@pytest.mark.parametrize("delay_signal", [False, True], ids=["loss", "delay"])
def test_with_the_probes_delay_signal_failed_probes_back_off_to_4_s_and_a_lift_is_found_sooner(
    delay_signal: bool,
) -> None:
    # The same cap, lifted at 40-47 s, at every phase of the backoff: the lift is found within the
    # longest wait + the probe's 3 s (2 s at 360p, 1 s at 720p) (measured here: 8.5 s at worst
    # without the delay signal, 6.5 s with it).
    worst = 0.0
    for lift in (40.0, 41.0, 42.0, 43.0, 44.0, 45.0, 46.0, 47.0):
        link = Link(cap=lambda t, lift=lift: 300_000.0 if t < lift else INF, chromium=True, can_probe=True)
        if delay_signal:
            link.viewer.delay_signal()
        link.run(lift)
        starts = _probe_starts(link)
        longest = max(b - a for a, b in itertools.pairwise(starts))
        assert longest <= (4.0 if delay_signal else 6.0) + 0.5, starts
        link.run(lift + 15.0)
        back = link.first_time(2, lift)
        assert back is not None, link.history[-60::5]
        worst = max(worst, back - lift)
    assert worst <= (4.0 if delay_signal else 6.0) + 3.0 + 0.2, worst


def test_a_remb_that_dropped_and_lags_never_holds_the_lowest_layer_back() -> None:
    viewer = ViewerLayers()
    estimate = viewer.bandwidth.estimate
    estimate.on_sent(200_000)
    estimate.on_remb(1_000_000, 0.0)
    assert viewer.choose("a", LAYERS, LIVE, None, 0.0, can_probe=True) == 1
    for i, remb in enumerate((212_000, 71_000, 57_000)):  # Chromium's REMB at a cap: it drops ...
        estimate.on_remb(remb, 1.0 + i)
    current: int | None = 1
    seen = set()
    for step in range(100):  # ... and holds at 57 kbit/s while 200 kbit/s get through loss-free
        t = 1.0 + step * TICK
        if step % 5 == 0:
            estimate.on_remb(57_000, t)
        if step % 10 == 5:
            estimate.on_loss(0.0, t)
        current = viewer.choose("a", LAYERS, LIVE, current, t, can_probe=True)
        assert current is not None, f"held at {t}"
        seen.add(current)
    assert 0 in seen, "down to the low layer (the budget is below the middle one), never to audio only"
    assert not estimate.remb_binding(11.0), "a REMB that has not dropped for 3 s caps nothing"


def test_audio_only_needs_the_lowest_layer_itself_to_lose_and_comes_back_through_a_probe() -> None:
    link = Link(cap=lambda t: 100_000.0 if t < 20.0 else INF, chromium=True, can_probe=True)
    link.run(20.0)
    gone = link.first_time(None, 0.0)
    assert gone is not None and gone <= 3.0, link.history[:40]
    assert link.layers_between(gone, 20.0) == {None}, "no video tried under the cap, only padding"
    link.run(32.0)
    back = next((t for t, layer in link.history if t >= 20.0 and layer is not None), None)
    assert back is not None and back - 20.0 <= 8.0, link.history[195::5]


def test_a_probe_steps_through_each_layer_and_any_congestion_signal_ends_it_with_backoff() -> None:
    config = BweConfig()
    viewer = ViewerLayers(config)
    estimate = viewer.bandwidth.estimate
    estimate.on_sent(400_000)
    estimate.on_remb(300_000, 0.0)  # well below what is sent, binds: the first choice is the low layer
    assert viewer.choose("a", LAYERS, LIVE, None, 0.0, can_probe=True) == 0
    for t in (1.0, 2.0, 3.0, 4.0):
        estimate.on_loss(0.0, t)  # the estimate grows, the REMB stops binding after 3 s
    assert viewer.choose("a", LAYERS, LIVE, 0, 4.0, can_probe=True) == 0
    probe = viewer.probe
    assert probe is not None and probe.layers == [1, 2]
    assert probe.padding_bps == pytest.approx([500_000 * 1.3 - 150_000, 1_500_000 * 1.3 - 150_000])
    assert viewer.padding_bps(4.0) == ("a", pytest.approx(500_000))
    assert viewer.choose("a", LAYERS, LIVE, 0, 5.9, can_probe=True) == 0  # the first step: 2 s
    assert viewer.padding_bps(5.9) == ("a", pytest.approx(500_000))
    viewer.on_nack(5.3)  # a loss: over (nothing passed)
    assert viewer.probe is None and viewer.padding_bps(5.3) is None
    assert viewer.choose("a", LAYERS, LIVE, 0, 5.3, can_probe=True) == 0
    # The next probe waits 2 s, then 4, then 6, then 6 (each failing at once).
    starts = []
    t = 5.3
    while len(starts) < 4 and t < 60.0:
        t = round(t + TICK, 6)
        estimate.congested_at = None  # quiet (the test is about the backoff alone)
        viewer.choose("a", LAYERS, LIVE, 0, t, can_probe=True)
        if viewer.probe is not None:
            starts.append(t)
            viewer.on_nack(t)
            viewer.choose("a", LAYERS, LIVE, 0, t, can_probe=True)
    assert [round(b - a, 1) for a, b in itertools.pairwise([5.3, *starts])] == [2.0, 4.0, 6.0, 6.0]
    # A clean probe: up after its two steps, to the top layer at once.
    t = starts[-1] + 6.0
    estimate.congested_at = None
    assert viewer.choose("a", LAYERS, LIVE, 0, t, can_probe=True) == 0 and viewer.probe is not None
    assert viewer.choose("a", LAYERS, LIVE, 0, t + 2.01, can_probe=True) == 0  # the second step
    assert viewer.padding_bps(t + 2.01) == ("a", pytest.approx(1_800_000))
    assert viewer.choose("a", LAYERS, LIVE, 0, t + 3.02, can_probe=True) == 2
    assert viewer.probes_ok == 1 and viewer.probe_wait_s == config.probe_backoff_s
    # One whose second step fails takes the layer of its first.
    t += 10.0
    estimate.congested_at = None
    assert viewer.choose("a", LAYERS, LIVE, 0, t, can_probe=True) == 0 and viewer.probe is not None
    assert viewer.choose("a", LAYERS, LIVE, 0, t + 2.01, can_probe=True) == 0
    viewer.on_nack(t + 2.5)
    assert viewer.choose("a", LAYERS, LIVE, 0, t + 2.5, can_probe=True) == 1
    assert viewer.probes_ok == 2


def test_an_old_loss_report_does_not_keep_a_viewer_held_on_audio_only_from_probing() -> None:
    # Held on audio only, the viewer reports no video loss any more: its last report (66 % lost
    # when the cap came) is no news after a while, and a probe may try the lowest layer again.
    estimate = Estimate()
    estimate.on_loss(0.66, 0.0)
    assert not estimate.quiet(1.0)
    assert estimate.quiet(2.5)


def test_random_loss_reported_with_every_nack_neither_switches_down_nor_holds_the_video() -> None:
    # 5 % random loss on the low layer's 20 packets a second: Chromium sends a receiver report with
    # each NACK, a packet or two after the last report, so single reports say 33 % or 50 % (1 lost of
    # 3, of 2) between the regular ones each second.
    viewer = ViewerLayers()
    estimate = viewer.bandwidth.estimate
    estimate.on_sent(600_000)
    estimate.on_remb(400_000, 0.0)  # well below what is sent: binds
    current = viewer.choose("a", LAYERS, LIVE, None, 0.0, can_probe=True)
    assert current == 0
    rng = random.Random(5)
    expected = lost = 0
    last_report = 0.0
    held = []
    for step in range(600):  # 30 s of packets, every 50 ms
        t = round(step * 0.05, 6)
        expected += 1
        if rng.random() < 0.05:
            lost += 1
            estimate.on_loss(lost / expected, t)  # with the NACK
            expected = lost = 0
            last_report = t
        elif t - last_report >= 1.0:
            estimate.on_loss(lost / expected, t)
            expected = lost = 0
            last_report = t
        current = viewer.choose("a", LAYERS, LIVE, current, t, can_probe=True)
        if current is None:
            held.append(t)
    assert not held, f"held on audio only at {held[:5]}"


def _top_share_under_random_loss(seed: int, fraction: float) -> float:
    """A viewer on the top layer, then ``fraction`` random loss for 120 s: the share of that time on
    the top layer. A report's fraction is a binomial count over the packets it covers (1,200-byte
    packets for a second)."""
    rng = random.Random(seed)
    state = {"lossy": False}
    link: Link | None = None

    def random_loss() -> float:
        if not state["lossy"] or link is None:
            return 0.0
        rate = AUDIO_BPS + (LAYERS[link.current] if link.current is not None else 0.0)
        packets = max(10, round(rate / 9600))
        return sum(rng.random() < fraction for _ in range(packets)) / packets

    link = Link(cap=lambda t: INF, chromium=True, can_probe=True, random_loss=random_loss)
    link.run(30.0)
    top = len(LAYERS) - 1
    assert link.current == top, (seed, link.history[::10])
    state["lossy"] = True
    link.run(150.0)
    during = [layer for t, layer in link.history if t >= 30.0]
    return during.count(top) / len(during)


def test_steady_random_loss_repaired_by_retransmissions_keeps_the_layer() -> None:
    # 5 % random loss, as nftables makes it in tests/e2e/test_impairment.py. One report now and then
    # reads above 10 %: that must not take the viewer down for good (the hold region kept such a
    # shrink: a ratchet). Before the fix 4 seeds of these 20 spent 8-40 % of the time below the top.
    shares = [_top_share_under_random_loss(seed, 0.05) for seed in range(20)]
    assert min(shares) >= 0.95, shares


# --- copies of frames' last packets (media/redundancy.py) ------------------------------------------


def test_copies_start_with_lasting_random_loss_hold_on_and_stop_at_congestion() -> None:
    config = BweConfig()
    estimate = Estimate(config)
    estimate.on_loss(0.0, 0.0)
    assert not estimate.copies(0.0), "a clean link: no copies"
    estimate.on_loss(0.01, 1.0)
    assert not estimate.copies(1.0), "below loss_low: no copies"
    for t in range(2, 8):
        estimate.on_loss(0.05, float(t))  # 5 % random loss, lasting
    assert estimate.copies(7.0)
    # The copies repair what they can, so the reports read clean: they hold on meanwhile ...
    for t in range(8, 20):
        estimate.on_loss(0.0, float(t))
    assert estimate.copies(19.0)
    # ... for ``copies_hold_s`` after the loss was last lasting.
    assert not estimate.copies(19.0 + config.copies_hold_s)
    # Congestion (lasting loss above loss_high) ends them at once: they would add to it.
    estimate = Estimate(config)
    for t in range(8):
        estimate.on_loss(0.05, float(t))
    assert estimate.copies(7.0)
    for t in range(8, 12):
        estimate.on_loss(0.3, float(t))
    assert estimate.loss_binds and not estimate.copies(11.0)
    # Loss that eases into the hold region after congestion (a cap's queue draining, a lower layer
    # that nearly fits) starts no copies until the link has been free of congestion for a while.
    for t in range(12, 20):
        estimate.on_loss(0.05, float(t))
    assert not estimate.loss_binds and not estimate.copies(19.0)
    end = 11 + int(config.copies_hold_s) + 1
    for t in range(20, end + 1):
        estimate.on_loss(0.05, float(t))
    assert estimate.copies(float(end))


def test_no_copies_while_chromium_s_remb_says_the_queue_is_filling() -> None:
    # A cap's loss comes with a REMB drop (Chromium sees the delay grow): that is a filling queue,
    # not random loss, and copies would keep it full.
    config = BweConfig()
    estimate = Estimate(config)
    estimate.on_remb(2_000_000, 0.0)
    estimate.on_remb(1_000_000, 5.0)  # dropped
    for t in range(5, 8):
        estimate.on_loss(0.05, float(t))
    assert not estimate.copies(7.0)
    for t in range(8, 12):
        estimate.on_loss(0.05, float(t))  # the REMB has not dropped again for remb_hold_s
    assert estimate.copies(11.0)


async def test_a_subscriber_turns_its_video_slots_copies_on_and_off_and_counts_them() -> None:
    from media import redundancy
    from tests.media.peers import loopback_ice, new_subscriber

    with loopback_ice():
        sub = new_subscriber(slots=2)
    before = redundancy.slots
    try:
        for t in range(8):
            sub.on_loss(13, now=float(t))  # 13/256: 5 %, lasting
        assert [p.video.redundant for p in sub.pairs] == [True, True]
        assert [p.audio.redundant for p in sub.pairs] == [False, False], "audio frames are one packet"
        assert redundancy.slots == before + 2
        for t in range(8, 40):
            sub.on_loss(0, now=float(t))  # clean reports: off once the hold is over
        assert [p.video.redundant for p in sub.pairs] == [False, False]
        assert redundancy.slots == before
        for t in range(40, 48):
            sub.on_loss(13, now=float(t))
        assert redundancy.slots == before + 2
        sub.close()  # a closed viewer's slots leave the count
        assert redundancy.slots == before
    finally:
        await sub.pc.close()


def test_no_copies_while_the_remb_is_below_the_media_and_they_stop_when_it_falls_there() -> None:
    # A capped viewer: Chromium's REMB dropped once and lags far below the media that gets through
    # (≈ 50 kbit/s under 200); the loss the cap's queue causes reads as random loss in the hold
    # region once the drop is remb_hold_s old. Copies would keep the queue full.
    config = BweConfig()
    estimate = Estimate(config)
    estimate.on_sent(260_000, 200_000)  # padding and copies on top of 200 kbit/s of media
    estimate.on_remb(50_000, 0.0)
    for t in range(1, 30):
        estimate.on_loss(0.05, float(t))
        estimate.on_remb(50_000, float(t))
    assert not estimate.copies(29.0)
    # The cap lifted: Chromium's REMB back at its ceiling over the media, the loss random.
    for t in range(30, 40):
        estimate.on_remb(300_000, float(t))
        estimate.on_loss(0.05, float(t))
    assert estimate.copies(39.0)
    # A REMB below the media again (a queue): the copies stop at once, not copies_hold_s later.
    estimate.on_remb(150_000, 40.0)
    assert not estimate.copies(40.0)
    # A viewer that sends no REMB (or a stale one) is judged by its loss alone.
    estimate = Estimate(config)
    estimate.on_sent(200_000, 200_000)
    for t in range(1, 8):
        estimate.on_loss(0.05, float(t))
    assert estimate.copies(7.0)
