"""How long the session report and a retention sweep take on a large session: one recorded by the
project's recorder from a real domain stage (rooms/stage.py, recording/session.py), with PEOPLE
attendees (a third reconnecting once, half sharing), POLLS named polls and quizzes everyone answers, and
a question from every fifth person. Prints the medians of RUNS runs.

    python3 bench/session_report.py [--people 500] [--polls 20] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.peer import MediaConfig
from media.room import MediaRoom
from recording.report import build, to_csv
from recording.retention import DAY_S, sweep
from recording.session import SessionRecorder
from recording.signing import NodeKey
from rooms.polls import PollSpec
from rooms.rates import Rate, RateLimits
from rooms.roles import Role
from rooms.stage import Stage, StageSettings

POLICY = "2026-11"


async def record(root: Path, key: NodeKey, people: int, polls: int) -> tuple[Path, int]:
    t = 1_795_703_000.0
    lots = Rate(1_000_000, 1.0)
    rates = RateLimits(**{name: lots for name in RateLimits.__dataclass_fields__})
    settings = StageSettings(recording_mode="manual", rates=rates, question_max_open=100_000,
                             question_max_per_person=100_000)  # fmt: skip
    stage = Stage("bench", "Bench", t, settings=settings)
    stage.join("host", "Host", Role.HOST, t, identity="host@x")
    for i in range(people):
        stage.join(f"p{i}", f"Person {i}", Role.AUDIENCE, t, identity=f"u{i}@x")
        scopes = {"comments", "share"} if i % 2 else {"comments"}
        stage.give_consent(f"p{i}", frozenset(scopes), POLICY, "join_prompt", t, f"c{i}")
    media = MediaRoom("bench", MediaConfig(), lambda pid, message: None)
    events = stage.start_recording("host", "s-1", t)
    recorder = SessionRecorder(root, stage, media, "s-1", t, print, signing_key=key)
    recorder.on_events(events)
    count = len(events)
    for k in range(polls):
        now = t + 10 + k
        quiz = k % 2 == 1
        spec = PollSpec(f"Q{k}", ("a", "b", "c"), anonymous=False, quiz=quiz, correct=(1,) if quiz else ())
        batches = [stage.create_poll("host", f"poll{k}", spec, now), stage.open_poll("host", f"poll{k}", now)]
        batches += [stage.vote(f"p{i}", f"poll{k}", [i % 3], now) for i in range(people)]
        batches.append(stage.close_poll("host", f"poll{k}", now))
        for batch in batches:
            recorder.on_events(batch)
            count += len(batch)
    for i in range(0, people, 5):
        batch = stage.ask_question(f"p{i}", f"q{i}", f"question {i}", t + 100)
        recorder.on_events(batch)
        count += len(batch)
    for i in range(0, people, 3):  # a third reconnect
        for batch in (
            stage.leave(f"p{i}", t + 200),
            stage.join(f"p{i}-2", f"Person {i}", Role.AUDIENCE, t + 210, identity=f"u{i}@x"),
        ):
            recorder.on_events(batch)
            count += len(batch)
    stop = stage.stop_recording("host", t + 600)
    recorder.on_events(stop)
    await recorder.stop(t + 600)
    return recorder.dir, count + len(stop)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=500)
    parser.add_argument("--polls", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "recordings"
        key = NodeKey.load_or_create(Path(tmp) / "keys" / "key")
        session, events = asyncio.run(record(root, key, args.people, args.polls))
        size = (session / "timeline.msgpack").stat().st_size
        json_s, csv_s = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            report = build(session)
            json_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            to_csv(report)
            csv_s.append(time.perf_counter() - started)
        a = report["attendance"]
        print(f"session: {args.people} people ({a['named']} named), {args.polls} polls, {events} events, "
              f"timeline {size / 1e6:.1f} MB")  # fmt: skip
        print(f"report (build): median {statistics.median(json_s) * 1000:.0f} ms over {args.runs} runs")
        print(f"csv (to_csv):   median {statistics.median(csv_s) * 1000:.0f} ms over {args.runs} runs")
        started = time.perf_counter()
        deleted, _ = sweep(root, 1_795_703_600.0 + 2 * DAY_S, 1, key)
        print(f"sweep deleting it: {(time.perf_counter() - started) * 1000:.0f} ms ({len(deleted)} session)")


if __name__ == "__main__":
    main()
