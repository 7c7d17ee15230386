"""Turns: heavy synchronous steps taken one per event-loop pass.

A join wave delivers hundreds of ``join`` frames in the same pass of the loop. Each join is a burst of
synchronous work that grows with the audience (``participant.joined`` to everyone, the ``joined``
list of everyone): run back to back in one pass, 1,000 of them stalled the loop for seconds, and every
comment, ping and timer of the stage waited behind them. Taking turns keeps the total work the same
but lets the loop serve everything else between two joins, so a wave's stall is one join long.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Turns:
    """FIFO turns, one granted per pass of the event loop.

    asyncio (and uvloop) run, in a pass, only the callbacks that were ready when the pass began: the
    release granted here wakes its waiter in the next pass, and the next release is scheduled behind
    it, so two turns never share a pass and whatever became ready meanwhile runs between them.
    """

    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._armed = False
        self.granted = 0  # turns handed out (tests, metrics)

    def __len__(self) -> int:
        return len(self._waiting)

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._waiting.append(turn)
        if not self._armed:
            self._armed = True
            loop.call_soon(self._release)
        await turn  # a waiter cancelled here (its socket closed) is skipped by _release

    def _release(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                self.granted += 1
                break
        if self._waiting:
            asyncio.get_running_loop().call_soon(self._release)
        else:
            self._armed = False
