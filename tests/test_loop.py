"""The suite runs on the event loop production runs on (tests/conftest.py)."""

from __future__ import annotations

import asyncio

import uvloop


async def test_async_tests_run_on_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


def test_asyncio_run_uses_uvloop_too() -> None:
    async def which() -> type:
        return type(asyncio.get_running_loop())

    assert asyncio.run(which()) is uvloop.Loop
