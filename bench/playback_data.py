"""How long the playback page's data takes to build for a long, busy session (recording/playback.py).

A session of ``--minutes`` with ``--comments`` comments (a fifth of their authors without ``share``,
a tenth without ``comments`` consent), a question and a poll a minute and a speaker change every five
minutes, written by the recorder's own parts (tests/support/playback_session.py); then ``of_session``
(read the timeline, the ledger and the manifest, build) timed ``--runs`` times: the median is the
figure (docs/recording.md, "Playback"; the node runs it off its event loop).

    python bench/playback_data.py --minutes 60 --comments 20000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from recording import playback
from rooms import events as ev
from rooms.views import CommentView, PollResults, PollView, QuestionView
from tests.support.playback_session import Person, write_session

T0 = 1_796_000_000.0


def people(n: int) -> list[Person]:
    out = []
    for i in range(n):
        scopes = ("comments", "media") if i % 5 == 0 else ("comments", "media", "share")
        out.append(Person(f"p-{i}", f"id-{i}", f"Person {i}", "audience", () if i % 10 == 1 else scopes))
    return out


def events(stage: str, minutes: int, comments: int, crowd: list[Person]) -> list[ev.Event]:
    out: list[ev.Event] = []
    span = minutes * 60.0
    for i in range(comments):
        who = crowd[i % len(crowd)]
        at = T0 + span * i / comments
        view = CommentView(
            id=f"c-{i}", author_id=who.participant_id, author_name=who.name, text=f"comment {i}", at=at
        )
        out.append(ev.CommentPosted(stage=stage, at=at, comment=view))
    for m in range(minutes):
        at = T0 + 60.0 * m + 30
        who = crowd[m % len(crowd)]
        q = QuestionView(
            id=f"q-{m}", author_id=who.participant_id, author_name=who.name, text=f"question {m}",
            votes=0, status="open", at=at,
        )  # fmt: skip
        out.append(ev.QuestionAsked(stage=stage, at=at, question=q))
        poll = PollView(
            id=f"poll-{m}", question=f"poll {m}", options=("a", "b"), multiple=False, anonymous=True,
            public_results=True, quiz=False, status="closed", duration_s=None, closes_at=None,
            results=PollResults(counts=(3, 4), ballots=7),
        )  # fmt: skip
        out.append(ev.PollClosed(stage=stage, at=at + 10, poll=poll))
        if m % 5 == 0:
            speaker = crowd[(m // 5) % len(crowd)].participant_id
            out.append(
                ev.PublishingStarted(stage=stage, at=at, participant=speaker, kinds=("audio", "video"))
            )
    out.sort(key=lambda e: e.at)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--comments", type=int, default=20_000)
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    crowd = people(args.people)
    with tempfile.TemporaryDirectory() as tmp:
        built = events("bench", args.minutes, args.comments, crowd)
        directory = write_session(
            Path(tmp), "bench", "s-1", crowd, built, started_at=T0, stopped_at=T0 + args.minutes * 60
        )
        size = (directory / "timeline.msgpack").stat().st_size
        times, data = [], None
        for _ in range(args.runs):
            start = time.perf_counter()
            data = playback.of_session(directory)
            times.append(time.perf_counter() - start)
        assert data is not None
        body = len(playback.encode(data))
    print(
        f"{len(built)} events ({size / 1e6:.1f} MB timeline), {args.people} people: "
        f"of_session median {statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f}, "
        f"max {max(times) * 1000:.0f}); {len(data.comments)} comments and {len(data.markers)} markers shown, "
        f"{body / 1e6:.2f} MB of JSON"
    )


if __name__ == "__main__":
    main()
