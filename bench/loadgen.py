"""Load generator for bench/forwarding.py: one publisher, or K subscribers that never decode.

Driven over pipes: it writes JSON lines on stdout (``consented``, ``publishing``, ``ready``,
``stats``, ``recording``, ``error``) and reads commands on stdin (``stats``, ``quit``, and for the
publisher, who joins as host: ``record start`` and ``record stop``, answered by a ``recording`` line
with ``ok``, the ``action`` and the server's reply). Runs on uvloop.

With ``--consent`` the publisher answers the join prompt before publishing: ``consent.give`` with
scopes media and comments under the policy version of ``joined.policy.version``, method
``join_prompt`` (docs/protocol.md, "Consent and recording").

    python bench/loadgen.py --url http://127.0.0.1:8080 --stage bench --publish [--consent]
    python bench/loadgen.py --url http://127.0.0.1:8080 --stage bench --subscribers 25 --prefix lg0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.clients: list[MedstageClient] = []
        self.ready = 0
        self.failed = 0
        self.video: EncodedVideoTrack | None = None
        self.audio: EncodedAudioTrack | None = None

    async def publish(self) -> None:
        clip = load_clip(self.args.clip_cache)
        client = MedstageClient(self.args.url, timeout=self.args.timeout)
        self.clients.append(client)
        await client.connect()
        joined = await client.join(self.args.stage, f"{self.args.prefix}-publisher", "host")
        if self.args.consent:
            policy = (joined.get("policy") or {}).get("version")
            reply = await client.request(
                {
                    "type": "consent.give",
                    "scopes": ["media", "comments"],
                    "policy_version": policy,
                    "method": "join_prompt",
                }
            )
            emit("consented", policy_version=policy, record_id=reply.get("record_id"))
        self.video, self.audio = EncodedVideoTrack(clip), EncodedAudioTrack(clip)
        await client.publish(self.audio, self.video)
        emit("publishing", participant=client.participant_id)

    async def subscribe(self) -> None:
        gate = asyncio.Semaphore(self.args.join_concurrency)

        async def one(i: int) -> None:
            client = MedstageClient(self.args.url, timeout=self.args.timeout)
            self.clients.append(client)
            try:
                async with gate:
                    await client.connect()
                    await client.join(self.args.stage, f"{self.args.prefix}-{i}", "audience")
                await client.wait_media(kind="video", timeout=self.args.media_timeout)
                self.ready += 1
            except Exception as exc:
                self.failed += 1
                emit("error", subscriber=i, message=f"{type(exc).__name__}: {exc}")

        async with asyncio.TaskGroup() as group:
            for i in range(self.args.subscribers):
                group.create_task(one(i))
        emit("ready", ready=self.ready, failed=self.failed)

    async def record(self, action: str) -> None:
        """``recording.start`` or ``recording.stop`` as the host (the publisher's connection)."""
        try:
            if action not in ("start", "stop"):
                raise ValueError(f"record {action!r}: start or stop")
            if not self.args.publish or not self.clients or self.clients[0].participant is None:
                raise RuntimeError("only a publisher that has joined (as host) records")
            reply = await self.clients[0].request({"type": f"recording.{action}"}, check=False)
            ok = reply.get("type") == "ok"
            emit("recording", action=action, ok=ok, reply=reply, at=time.time())
        except Exception as exc:
            emit("recording", action=action, ok=False, reply={"message": f"{type(exc).__name__}: {exc}"})

    def stats(self) -> dict[str, Any]:
        totals: dict[str, Any] = {
            "packets": 0,
            "bytes": 0,
            "frames_complete": 0,
            "frames_incomplete": 0,
            "first_frame_keyframe": 0,
            "first_frame_not_keyframe": 0,
        }
        for client in self.clients:
            for assembler in client.assemblers.values():
                s = assembler.stats
                totals["packets"] += s.packets
                totals["bytes"] += s.bytes
                totals["frames_complete"] += s.frames_complete
                totals["frames_incomplete"] += s.frames_incomplete
                if s.first_frame_keyframe is True:
                    totals["first_frame_keyframe"] += 1
                elif s.first_frame_keyframe is False:
                    totals["first_frame_not_keyframe"] += 1
        if self.video is not None and self.audio is not None:
            totals.update(
                video_frames_sent=self.video.frames_sent,
                audio_frames_sent=self.audio.frames_sent,
                keyframe_requests=self.video.keyframe_requests,
                lag_resets=self.video.lag_resets + self.audio.lag_resets,
            )
        totals["cpu_s"] = time.process_time()
        totals["time"] = time.monotonic()
        return totals

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await client.close()


async def commands() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(args: argparse.Namespace) -> None:
    gen = LoadGen(args)
    stdin = await commands()
    pending: set[asyncio.Task[None]] = set()
    work = asyncio.create_task(gen.publish() if args.publish else gen.subscribe())
    work.add_done_callback(
        lambda t: (
            t.cancelled()
            or t.exception() is None
            or emit("error", message=f"{type(t.exception()).__name__}: {t.exception()}")
        )
    )
    try:
        while True:
            line = await stdin.readline()
            command = line.decode().strip()
            if command == "stats":
                emit("stats", **gen.stats())
            elif command.startswith("record "):
                task = asyncio.create_task(gen.record(command.split(None, 1)[1]))
                pending.add(task)
                task.add_done_callback(pending.discard)
            elif command in ("quit", ""):  # "" is EOF: our parent is gone
                break
    finally:
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        await gen.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="medstage load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--publish", action="store_true", help="be the publisher")
    parser.add_argument(
        "--consent", action="store_true", help="publisher: consent.give (media, comments) after joining"
    )
    parser.add_argument("--subscribers", type=int, default=0)
    parser.add_argument("--prefix", default="lg")
    parser.add_argument("--join-concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request")
    parser.add_argument("--media-timeout", type=float, default=60.0)
    parser.add_argument("--clip-cache", default=None)
    args = parser.parse_args()
    import uvloop

    uvloop.run(run(args))


if __name__ == "__main__":
    main()
