"""recording/composite/layout.py: who is large, with hysteresis; screen shares; grids; geometry."""

from __future__ import annotations

import itertools

from recording.composite.layout import (
    WINDOW_S,
    Rect,
    Scene,
    Span,
    SpeakerRules,
    arrange,
    fit,
    scene_at,
    scenes,
)

QUIET, LOUD, SOFT = -90.0, -20.0, -40.0


def _levels(pattern: dict[str, str]) -> dict[str, list[float]]:
    """One character per 0.5 s window: L loud, s soft, . silent."""
    table = {"L": LOUD, "s": SOFT, ".": QUIET}
    return {pid: [table[c] for c in text] for pid, text in pattern.items()}


def _cams(*pids: str, start: float = 0.0, end: float = 60.0) -> list[Span]:
    return [Span(f"tracks/{p}-video-1.webm", p, "camera", start, end) for p in pids]


def _big_at(layout: list[Scene], t: float) -> str | None:
    scene = scene_at(layout, t)
    assert scene is not None
    return scene.big


def test_the_speaker_takes_the_large_tile_only_after_speaking_clearly_for_a_while() -> None:
    # b speaks from 2 s; a short interjection by a (1 s) at 6 s does not move the large tile.
    levels = _levels({"a": "LLLL" + "...." + "LL" + "..........", "b": "...." + "LLLL" + ".." + "LLLLLLLLLL"})
    layout = scenes(_cams("a", "b"), levels, 10.0)
    assert _big_at(layout, 1.9) == "tracks/a-video-1.webm"
    assert _big_at(layout, 2.9) == "tracks/a-video-1.webm"  # b not yet 1.5 s
    assert _big_at(layout, 3.6) == "tracks/b-video-1.webm"
    assert _big_at(layout, 6.7) == "tracks/b-video-1.webm"  # a's 1 s does not flicker it back
    changes = [s.big for s in layout]
    assert changes.count("tracks/a-video-1.webm") == 1


def test_two_talking_at_once_is_no_clear_speaker_and_a_quiet_panel_becomes_a_grid() -> None:
    levels = _levels({"a": "LLLL" + "L" * 12, "b": "...." + "L" * 12, "c": "." * 16})
    layout = scenes(_cams("a", "b", "c"), levels, 8.0)
    assert scene_at(layout, 1.9).mode == "speaker"  # type: ignore[union-attr]
    # a and b at once from 2 s: nobody clear; after silence_s (4 s) a panel of three is a grid.
    assert scene_at(layout, 4.0).mode == "speaker"  # type: ignore[union-attr]
    assert scene_at(layout, 6.5).mode == "grid"  # type: ignore[union-attr]


def test_a_margin_decides_and_soft_speech_counts_when_alone() -> None:
    rules = SpeakerRules()
    levels = _levels({"a": "ssssssss", "b": "........"})
    layout = scenes(_cams("a", "b"), levels, 4.0, rules)
    assert _big_at(layout, 3.0) == "tracks/a-video-1.webm"


def test_a_screen_share_is_large_and_cameras_beside_it() -> None:
    spans = [*_cams("a", "b"), Span("tracks/a-screen-video-1.webm", "a", "screen", 2.0, 5.0)]
    layout = scenes(spans, _levels({"a": "L" * 20, "b": "." * 20}), 10.0)
    during = scene_at(layout, 3.0)
    assert during is not None and during.mode == "screen"
    assert during.big == "tracks/a-screen-video-1.webm"
    assert set(during.small) == {"tracks/a-video-1.webm", "tracks/b-video-1.webm"}
    assert scene_at(layout, 1.99).mode == "speaker"  # type: ignore[union-attr]
    assert scene_at(layout, 2.0).mode == "screen"  # type: ignore[union-attr]  # exactly when it starts
    assert scene_at(layout, 5.0).mode == "speaker"  # type: ignore[union-attr]


def test_late_joiners_gaps_and_an_empty_canvas() -> None:
    spans = [
        Span("a1", "a", "camera", 0.0, 3.0),
        Span("a2", "a", "camera", 4.0, 8.0),  # a withdrew at 3 s, consented again at 4 s
        Span("b1", "b", "camera", 1.3, 8.0),  # joined late
    ]
    layout = scenes(spans, {}, 9.0)
    assert scene_at(layout, 1.0).mode == "single"  # type: ignore[union-attr]
    assert scene_at(layout, 1.3).mode in ("grid", "speaker")  # type: ignore[union-attr]
    assert scene_at(layout, 3.5).big == "b1"  # type: ignore[union-attr]
    assert scene_at(layout, 8.5).mode == "empty"  # type: ignore[union-attr]
    assert layout[0].start == 0.0 and layout[-1].end == 9.0
    assert all(x.end == y.start for x, y in itertools.pairwise(layout))
    assert all((x.mode, x.big, x.small) != (y.mode, y.big, y.small) for x, y in itertools.pairwise(layout))


def test_tiles_are_even_inside_the_canvas_and_do_not_overlap() -> None:
    for scene in (
        Scene(0, 1, "speaker", "a", ("b", "c", "d", "e", "f")),
        Scene(0, 1, "grid", None, ("a", "b", "c", "d", "e")),
        Scene(0, 1, "single", "a", ()),
    ):
        boxes = list(arrange(scene, 1280, 720).values())
        assert len(boxes) == 1 + len(scene.small) if scene.big else len(scene.small)
        for r in boxes:
            assert all(v % 2 == 0 for v in (r.x, r.y, r.w, r.h))
            assert r.x >= 0 and r.y >= 0 and r.x + r.w <= 1280 and r.y + r.h <= 720
        for i, p in enumerate(boxes):
            for q in boxes[i + 1 :]:
                assert p.x + p.w <= q.x or q.x + q.w <= p.x or p.y + p.h <= q.y or q.y + q.h <= p.y
    inner = fit(640, 360, Rect(0, 0, 400, 400))
    assert (inner.w, inner.h) == (400, 224) and inner.y == 88
    assert WINDOW_S == 0.5
