"""Joins take turns, one per event-loop pass (server/host/turns.py): whatever becomes ready meanwhile
(a comment, a ping, the loop-lag timer) runs between two of them, and the order is kept."""

from __future__ import annotations

import asyncio
import time

from server.host.turns import Turns


async def test_turns_are_granted_one_per_loop_pass_in_order() -> None:
    turns = Turns()
    log: list[str] = []
    ticking = True

    def tick() -> None:  # stands for everything else the loop serves: re-armed every pass
        log.append("tick")
        if ticking:
            asyncio.get_running_loop().call_soon(tick)

    async def join(i: int) -> None:
        await turns.wait()
        log.append(f"join {i}")

    asyncio.get_running_loop().call_soon(tick)
    await asyncio.gather(*(join(i) for i in range(20)))
    ticking = False
    joins = [entry for entry in log if entry != "tick"]
    assert joins == [f"join {i}" for i in range(20)]
    between = [log.index(f"join {i + 1}") - log.index(f"join {i}") for i in range(19)]
    assert all(gap >= 2 for gap in between), log  # at least one other pass between two joins
    assert turns.granted == 20 and len(turns) == 0


async def test_a_burst_of_heavy_joins_does_not_stall_a_timer() -> None:
    """50 joins of 10 ms each arriving together: without turns the loop-lag timer waits ≈ 500 ms;
    with them it fires within about one join's work."""
    turns = Turns()
    loop = asyncio.get_running_loop()
    lags: list[float] = []

    def probe(due: float) -> None:
        lags.append(loop.time() - due)
        if len(lags) < 200:
            loop.call_at(loop.time() + 0.005, probe, loop.time() + 0.005)

    async def join() -> None:
        await turns.wait()
        end = time.perf_counter() + 0.010
        while time.perf_counter() < end:  # the synchronous work a join does
            pass

    loop.call_at(loop.time() + 0.005, probe, loop.time() + 0.005)
    await asyncio.gather(*(join() for _ in range(50)))
    assert max(lags) < 0.1, max(lags)


async def test_a_cancelled_waiter_is_skipped() -> None:
    turns = Turns()
    gone = asyncio.ensure_future(turns.wait())
    kept = asyncio.ensure_future(turns.wait())
    gone.cancel()
    await asyncio.wait_for(kept, 1)
    assert gone.cancelled() and turns.granted == 1
