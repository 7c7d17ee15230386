"""The console's I/O: one WebSocket (``Link``) per stage, the ``App`` that runs command lines, and the
loops that read them (the prompt with the ``[console]`` extra on a terminal, else plain lines)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from server.console.commands import Local, Request, help_text, parse
from server.console.feed import audit_table, feed_line, follow, stages_table, who_table
from server.console.model import Console, StageCopy, UsageError

RECONNECT_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 4010})
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.5, 8.0
REPLY_TIMEOUT_S = 10.0
INSTALL_HINT = "pip install 'medstage[console]'"

FINAL = -1.0  # a join refused for good


class Link:
    """One stage's console socket: joins as an observer, feeds the console, comes back by itself."""

    def __init__(self, app: App, stage_id: str) -> None:
        self.app = app
        self.stage_id = stage_id
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.final = False
        self.settled = asyncio.Event()  # joined, or refused for good: a script's commands may start
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    @property
    def copy(self) -> StageCopy:
        return self.app.console.stages[self.stage_id]

    async def run(self) -> None:
        """Connect, join, read; after a close that is not final, wait (backoff) and again."""
        backoff = BACKOFF_INITIAL_S
        while True:
            wait = await self._session()
            if wait is None:
                self.final = True
                self.settled.set()
                self.app.link_ended()
                return
            if self.copy.status == "live":  # it had joined: start the backoff afresh
                backoff = BACKOFF_INITIAL_S
            self.copy.status = "reconnecting"
            delay = wait if wait > 0 else backoff / 2 + random.random() * backoff / 2
            backoff = min(BACKOFF_MAX_S, backoff * 2)
            await asyncio.sleep(delay)

    async def _session(self) -> float | None:
        """One connection: None when it ended for good, else seconds to wait (0: the backoff's)."""
        try:
            async with self.app.http.ws_connect(self.app.ws_url, heartbeat=20.0) as ws:
                self.ws = ws
                join = {
                    "type": "join",
                    "id": "join",
                    "stage": self.stage_id,
                    "token": self.app.token,
                    "observer": True,
                }
                await ws.send_bytes(msgpack.packb(join))
                retry = await self._read(ws)
                code = ws.close_code
        except (aiohttp.ClientError, OSError) as exc:
            self.app.say(feed_line(self.stage_id, "console", f"cannot reach {self.app.ws_url}: {exc}"))
            return 0
        finally:
            self.ws = None
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(
                        UsageError(f"stage {self.stage_id}: connection lost before the reply")
                    )
            self._waiting.clear()
        if retry is not None:
            return None if retry == FINAL else retry
        if code in RECONNECT_CODES:
            self.app.say(feed_line(self.stage_id, "console", f"connection lost ({code}): reconnecting"))
            return 0
        if not self.app.stopping:
            self.copy.status = f"closed ({code})"
            self.app.say(feed_line(self.stage_id, "console", f"closed ({code}): not reconnecting"))
        return None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> float | None:
        """Frames until the socket closes (None); or the join's refusal (see ``_on_join_reply``)."""
        async for frame in ws:
            if frame.type is aiohttp.WSMsgType.BINARY:
                msg = msgpack.unpackb(frame.data)
            elif frame.type is aiohttp.WSMsgType.TEXT:
                msg = json.loads(frame.data)
            else:
                break
            if msg.get("id") == "join":
                retry = self._on_join_reply(msg)
                if retry is not None:
                    await ws.close()
                    return retry
                continue
            future = self._waiting.pop(str(msg.get("id")), None) if "id" in msg else None
            if future is not None and not future.done():
                future.set_result(msg)
                continue
            if msg.get("type") == "error":
                self.app.say(feed_line(self.stage_id, "error", f"{msg.get('code')}: {msg.get('message')}"))
                continue
            try:
                line = follow(self.app.console, self.stage_id, msg)
            except Exception as exc:  # a message this client cannot read must not end the console
                line = feed_line(self.stage_id, str(msg.get("type")), f"(not understood: {exc!r}) {msg}")
            if line is not None:
                self.app.say(line)
        return None

    def _on_join_reply(self, msg: dict[str, Any]) -> float | None:
        """None: joined; else seconds to wait before trying again, or ``FINAL``."""
        if msg.get("type") == "joined":
            self.copy.joined(msg)
            self.settled.set()
            people = sum(1 for p in self.copy.people.values() if not p.get("observer"))
            me = msg["participant"]
            count = "1 person" if people == 1 else f"{people} people"
            text = f"as {me['name']} ({me['role']}); {count}; {self.copy.info.get('title')}"
            self.app.say(feed_line(self.stage_id, "joined", text))
            return None
        self.app.say(feed_line(self.stage_id, "error", f"{msg.get('code')}: {msg.get('message')}"))
        if isinstance(msg.get("retry_after"), (int, float)):
            return max(0.1, float(msg["retry_after"]))
        self.copy.status = f"closed ({msg.get('code')})"
        return FINAL  # refused for good

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        ws = self.ws
        if ws is None or ws.closed or self.copy.status != "live":
            raise UsageError(f"stage {self.stage_id} is not connected ({self.copy.status})")
        request_id = f"c{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        await ws.send_bytes(msgpack.packb({**message, "id": request_id}))
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                return await future
        except TimeoutError:
            raise UsageError(f"stage {self.stage_id}: no reply in {REPLY_TIMEOUT_S:g} s") from None
        finally:
            self._waiting.pop(request_id, None)


class App:
    """The console's I/O: one ``Link`` per stage, the command loop, and where lines are printed."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str, stage_ids: list[str]) -> None:
        self.http = http
        self.ws_url = re.sub(r"^http", "ws", url.rstrip("/")) + "/console"
        self.token = token
        self.console = Console.watching(stage_ids)
        self.links = {s: Link(self, s) for s in stage_ids}
        self.stopping = False
        self.all_ended = asyncio.Event()

    def say(self, text: str) -> None:
        print(text, flush=True)

    def link_ended(self) -> None:
        if all(link.final for link in self.links.values()):
            self.all_ended.set()

    async def execute(self, line: str) -> bool:
        """Run one command line; False when it was ``quit``."""
        try:
            action = parse(line, self.console)
            if isinstance(action, Local):
                return self._local(action)
            if isinstance(action, Request):
                reply = await self.links[action.stage].request(action.message)
                self._show_reply(action, reply)
        except UsageError as exc:
            self.say(f"! {exc}")
        return True

    def _local(self, action: Local) -> bool:
        console = self.console
        match action.name:
            case "quit":
                return False
            case "help":
                self.say(help_text())
            case "stages":
                self.say(stages_table(console))
            case "who":
                self.say(who_table(console.stages[action.args[0] if action.args else console.current]))
            case "use":
                if not action.args:
                    raise UsageError(f"usage: use STAGE (now: {console.current})")
                console.current = action.args[0]
                self.say(f"commands now go to stage {console.current}")
            case "audit":
                self.say(audit_table(console))
        return True

    def _show_reply(self, action: Request, reply: dict[str, Any]) -> None:
        kind = action.message["type"]
        if reply.get("type") == "error":
            retry = f" (retry after {reply['retry_after']} s)" if "retry_after" in reply else ""
            self.say(f"✗ {kind} refused: {reply.get('code')}: {reply.get('message')}{retry}")
            return
        extra = " ".join(f"{k}={v}" for k, v in reply.items() if k not in ("type", "id"))
        self.say(f"✓ {kind} ok {extra}".rstrip())

    async def stop(self) -> None:
        self.stopping = True
        for link in self.links.values():
            if link.ws is not None:
                await link.ws.close()


PromptLoop = Callable[["App", Path | None], Coroutine[Any, Any, None]]


def terminal_prompt() -> PromptLoop | None:
    """The terminal prompt's loop; None when prompt_toolkit (the ``[console]`` extra) is missing."""
    try:
        from server.console.prompt import prompt_loop
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "prompt_toolkit":
            raise  # a fault of ours, not a missing extra
        return None
    return prompt_loop


async def _plain_loop(app: App) -> None:
    """Lines from a pipe (or a terminal without the prompt): the same commands, no prompt, once every
    stage is joined."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            for link in app.links.values():
                await link.settled.wait()
    while line := await asyncio.to_thread(sys.stdin.readline):
        if not await app.execute(line):
            return


async def run(
    url: str, token: str, stage_ids: list[str], history_file: Path | None, prompt: PromptLoop | None
) -> int:
    """The console until ``quit``, Ctrl-D, or every stage's socket closed for good (exit status 1).
    Commands come through ``prompt`` (a terminal's), or line by line when it is None."""
    async with aiohttp.ClientSession() as http:
        app = App(http, url, token, stage_ids)
        async with asyncio.TaskGroup() as group:
            links = [group.create_task(link.run()) for link in app.links.values()]
            ui = group.create_task(_plain_loop(app) if prompt is None else prompt(app, history_file))
            ended = group.create_task(app.all_ended.wait())
            await asyncio.wait([ui, ended], return_when=asyncio.FIRST_COMPLETED)
            ended_stages = all(c.info.get("state") == "ended" for c in app.console.stages.values())
            status = 1 if ended.done() and not ui.done() and not ended_stages else 0
            ui.cancel()
            ended.cancel()
            await app.stop()
            for task in links:
                task.cancel()
    return status
