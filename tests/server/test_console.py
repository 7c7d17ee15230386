"""The moderator console: ``GET /console`` (moderator tokens only, an observer hidden from the audience,
the live feed, every moderator command) and ``python -m server.console`` driven in a terminal (a pty)
against a running node, served through the relay too (the server suite's deployments)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pexpect
import pytest

from server.console.commands import Local, Request, completions, parse
from server.console.feed import follow
from server.console.model import Console, UsageError
from tests.conftest import RunningNode
from tests.support.tokens import bearer, signed, token
from tests.support.ws import Socket

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_PROMPT_TOOLKIT = (
    "import runpy, sys; sys.modules['prompt_toolkit'] = None; "
    "runpy.run_module('server.console', run_name='__main__', alter_sys=True)"
)
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


@pytest.fixture
def node(module_node: RunningNode) -> RunningNode:
    return module_node


def front_url(node: Any) -> str:
    """Where clients connect: through the relay, the node that does not host the stage."""
    return str(getattr(node, "front", node).url)


@pytest.fixture
async def stage(node: RunningNode) -> str:
    stage_id = "con-" + uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as session:
        async with session.post(node.url + "/api/stages", json={"id": stage_id}, headers=bearer()) as r:
            assert r.status == 201, await r.text()
    return stage_id


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def joined(
    http: aiohttp.ClientSession, url: str, join: dict[str, Any]
) -> tuple[Socket, dict[str, Any]]:
    sock = Socket(await http.ws_connect(url))
    reply = await sock.request({"id": "join", **join})
    assert reply["type"] == "joined", reply
    return sock, reply


async def person(http: aiohttp.ClientSession, node: RunningNode, stage: str, role: str, name: str) -> Socket:
    join = signed({"type": "join", "stage": stage, "name": name, "role": role})
    sock, reply = await joined(http, node.ws_url, join)
    sock.pid = reply["participant"]["id"]  # type: ignore[attr-defined]
    sock.joined = reply  # type: ignore[attr-defined]
    return sock


def moderator_token(stage: str, name: str) -> str:
    return token(stage, "moderator", "mod-" + uuid.uuid4().hex[:8], name)


class Terminal:
    """``python -m server.console`` in a pseudo-terminal: what it shows (escapes stripped), and typing."""

    def __init__(self, url: str, token_: str, stage: str, without_prompt_toolkit: bool = False) -> None:
        # Without prompt_toolkit: the module run as ``-m`` would run it, with the import refused.
        entry = ["-c", WITHOUT_PROMPT_TOOLKIT] if without_prompt_toolkit else ["-m", "server.console"]
        argv = [
            *entry,
            "--url",
            url,
            "--token",
            token_,
            "--stage",
            stage,
            "--no-history-file",
        ]
        env = {**os.environ, "TERM": "dumb", "COLUMNS": "200", "LINES": "50"}
        self.child = pexpect.spawn(
            sys.executable, argv, cwd=ROOT, env=env, dimensions=(50, 200), encoding="utf-8"
        )
        self.raw = ""
        self.seen = 0  # what the last wait matched up to: each wait looks further on

    @property
    def screen(self) -> str:
        return ANSI.sub("", self.raw).replace("\r", "")

    def _wait(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen
            found = re.compile(pattern).search(screen, self.seen)
            if found:
                self.seen = found.end()
                start = screen.rfind("\n", 0, found.start()) + 1
                end = screen.find("\n", found.end())
                return screen[start : end if end >= 0 else None]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} did not appear; the screen:\n{screen[-3000:]}")
            try:
                self.raw += self.child.read_nonblocking(65536, timeout=min(remaining, 0.2))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                raise AssertionError(f"the console exited before {pattern!r}:\n{screen[-3000:]}") from None

    async def wait(self, pattern: str, timeout: float = 10.0) -> str:
        """The line where ``pattern`` (a regex) next appears."""
        return await asyncio.to_thread(self._wait, pattern, timeout)

    def type(self, line: str) -> None:
        self.child.send(line + "\r")

    async def exit_status(self, timeout: float = 10.0) -> int:
        def wait() -> int:
            self.child.expect(pexpect.EOF, timeout=timeout)
            self.child.close()
            return int(self.child.exitstatus or 0)

        return await asyncio.to_thread(wait)


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    yield started
    for term in started:
        if term.child.isalive():
            term.child.terminate(force=True)


# --- in a terminal ----------------------------------------------------------------------------------


async def test_the_console_in_a_terminal_shows_the_feed_and_its_commands_take_effect(
    node: RunningNode, stage: str, session: aiohttp.ClientSession, terminals: list[Terminal]
) -> None:
    alice = await person(session, node, stage, "audience", "Alice Audience")
    mod = await person(session, node, stage, "moderator", "Dr Browser")
    term = Terminal(front_url(node), moderator_token(stage, "Dr Console"), stage)
    terminals.append(term)
    await term.wait(r"joined +as Console: Dr Console \(moderator\); 2 people")
    console_joined = await mod.recv_type("observer.joined")
    console_pid = console_joined["participant_id"]
    assert console_joined["name"] == "Console: Dr Console"

    # The live feed.
    await alice.request({"type": "comment.post", "id": "c", "text": "hello from the audience"})
    await term.wait(r"comment\.posted +Alice Audience: hello from the audience")

    # A table of the people.
    term.type("who")
    await term.wait(r"id +name +role +publishing +muted +hand")
    row = await term.wait(r"Alice Audience")
    assert re.search(rf"{alice.pid} +Alice Audience +audience +- +- +-", row), row  # type: ignore[attr-defined]

    # Commands take effect: an invitation, a moderator mute, a removal.
    term.type("invite alice")
    await term.wait(r"✓ speaker\.invite ok")
    assert (await alice.recv_type("invitation"))["by"] == console_pid
    assert (await alice.request({"type": "invitation.accept", "id": "a"}))["type"] == "ok"
    await term.wait(r"participant\.updated +Alice Audience \(speaker")

    term.type("mute Alice audio")
    await term.wait(
        r"moderation\.audit +Console: Dr Console: moderation\.mute Alice Audience .* kind=audio muted=True"
    )
    async with asyncio.timeout(5):
        while True:
            update = await alice.recv_type("participant.updated")
            if update["participant"]["moderator_muted"]["audio"]:
                break

    term.type('remove "Alice Audience" off topic')
    line = await term.wait(r"moderation\.audit .*moderation\.remove")
    assert "Alice Audience" in line and '"off topic"' in line, line
    removed = await alice.recv_type("participant.removed")
    assert (removed["by"], removed["reason"]) == (console_pid, "off topic")
    await alice.ws.receive(timeout=5)
    assert alice.ws.close_code == 4003
    await term.wait(r"participant\.left +Alice Audience")

    # The audit records, in the console and as events to the other moderators.
    audits = [f for f in await mod.sync() if f["type"] == "moderation.audit"]
    assert [a["action"] for a in audits] == ["speaker.invite", "moderation.mute", "moderation.remove"]
    remove = audits[-1]
    assert remove["actor"] == console_pid and remove["actor_name"] == "Console: Dr Console"
    assert (remove["target"], remove["target_name"], remove["reason"]) == (
        alice.pid,  # type: ignore[attr-defined]
        "Alice Audience",
        "off topic",
    )
    assert remove["target_identity"] and remove["actor_identity"].startswith("mod-")
    term.type("audit")
    await term.wait(r"time +stage +actor +action +target +reason")
    await term.wait(r"Console: Dr Console +moderation\.remove +Alice Audience +off topic")

    # Refusals read as such; quitting is clean.
    term.type("end")
    await term.wait(rf"type `end {stage}` to confirm")
    term.type("role nobody moderator")
    await term.wait(r"nobody called 'nobody'")
    term.type("lock on")
    await term.wait(r"✓ stage\.lock ok")
    term.type("start")
    await term.wait(r"✗ stage\.start refused: not_allowed: ")
    term.type("quit")
    assert await term.exit_status() == 0
    assert (await mod.recv_type("observer.left"))["participant_id"] == console_pid


async def test_a_console_with_an_audience_token_says_why_and_exits(
    node: RunningNode, stage: str, terminals: list[Terminal]
) -> None:
    term = Terminal(front_url(node), token(stage, "audience", name="Eve"), stage)
    terminals.append(term)
    await term.wait(r"error +missing_grant: this token has no 'moderate' grant")
    assert await term.exit_status() == 1


async def test_without_prompt_toolkit_the_console_says_how_to_get_it_and_reads_plain_lines(
    node: RunningNode, stage: str, terminals: list[Terminal]
) -> None:
    term = Terminal(front_url(node), moderator_token(stage, "Dr Plain"), stage, without_prompt_toolkit=True)
    terminals.append(term)
    await term.wait(r"prompt_toolkit is not installed: no prompt, .*pip install 'medstage\[console\]'")
    await term.wait(r"joined +as Console: Dr Plain \(moderator\)")
    term.type("who")
    await term.wait(r"id +name +role +publishing +muted +hand")
    await term.wait(r"Console: Dr Plain +moderator console")
    term.type("quit")
    assert await term.exit_status() == 0


# --- the endpoint -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/console", "/ws"])
async def test_an_audience_token_is_refused_at_the_console_door(
    node: RunningNode, stage: str, session: aiohttp.ClientSession, path: str
) -> None:
    sock = Socket(await session.ws_connect(front_url(node).replace("http", "ws") + path))
    join = {"type": "join", "id": 1, "stage": stage, "token": token(stage, "audience"), "observer": True}
    reply = await sock.request(join)
    assert (reply["type"], reply["code"]) == ("error", "missing_grant"), reply
    await sock.ws.receive(timeout=5)
    assert sock.ws.close_code == 4403


async def test_a_token_with_the_moderate_grant_but_no_moderator_role_is_refused(
    node: RunningNode, stage: str, session: aiohttp.ClientSession
) -> None:
    sock = Socket(await session.ws_connect(front_url(node).replace("http", "ws") + "/console"))
    speaker = token(stage, "speaker", grants=["moderate", "comment"])
    reply = await sock.request({"type": "join", "id": 1, "stage": stage, "token": speaker})
    # A grant never widens a role (server/auth.py); the console checks the role too.
    assert reply["type"] == "error" and reply["code"] in ("missing_grant", "console_not_allowed"), reply
    await sock.ws.receive(timeout=5)
    assert sock.ws.close_code == 4403


async def test_the_console_is_hidden_from_the_audience_and_sees_what_moderators_see(
    node: RunningNode, stage: str, session: aiohttp.ClientSession
) -> None:
    alice = await person(session, node, stage, "audience", "Alice")
    mod = await person(session, node, stage, "moderator", "Dr Mod")
    await alice.sync()  # what they were sent on joining
    await mod.sync()
    url = front_url(node).replace("http", "ws") + "/console"
    console, reply = await joined(
        session, url, {"type": "join", "stage": stage, "token": moderator_token(stage, "Dr C")}
    )
    me = reply["participant"]
    assert me["observer"] is True and me["role"] == "moderator" and me["name"] == "Console: Dr C"
    assert {p["name"] for p in reply["participants"]} == {"Alice", "Dr Mod"} and reply["observers"] == []

    assert await alice.sync() == [], "the audience is not told"
    assert [f["type"] for f in await mod.sync()] == ["observer.joined"], "moderators are"
    late_viewer = await person(session, node, stage, "audience", "Late viewer")
    assert "Console: Dr C" not in {p["name"] for p in late_viewer.joined["participants"]}  # type: ignore[attr-defined]
    assert "observers" not in late_viewer.joined  # type: ignore[attr-defined]
    late_mod = await person(session, node, stage, "moderator", "Late mod")
    assert "Console: Dr C" not in {p["name"] for p in late_mod.joined["participants"]}  # type: ignore[attr-defined]
    (shown,) = late_mod.joined["observers"]  # type: ignore[attr-defined]
    assert (shown["id"], shown["name"], shown["observer"]) == (me["id"], "Console: Dr C", True)
    for sock in (alice, mod):
        await sock.sync()  # the late joiners' arrival
    arrivals = [f["type"] for f in await console.sync()]
    assert arrivals.count("participant.joined") == 2 and "subscriber.offer" not in arrivals, arrivals
    async with session.get(f"{node.url}/api/stages/{stage}", headers=bearer()) as r:
        assert (await r.json())["participants"] == 4, "the console is not counted"

    # The live feed: everyone's events and the moderators' (a draft poll, audit records); no media.
    await alice.request({"type": "comment.post", "id": "c", "text": "hi"})
    await mod.request({"type": "poll.create", "id": "p", "question": "Q?", "options": ["a", "b"]})
    kinds = [f["type"] for f in await console.sync()]
    assert {"comment.posted", "poll.created", "moderation.audit"} <= set(kinds), kinds

    # Its commands are the protocol's; the host's own commands need a host token.
    refused = await console.request({"type": "stage.end", "id": "e"})
    assert (refused["type"], refused["code"]) == ("error", "not_allowed")
    assert (await console.request({"type": "chat.slow_mode", "id": "s", "seconds": 5}))["type"] == "ok"
    assert (await alice.recv_type("chat.updated"))["slow_mode_s"] == 5
    audit = await mod.recv_type("moderation.audit")
    while audit["action"] != "chat.slow_mode":
        audit = await mod.recv_type("moderation.audit")
    assert audit["actor"] == me["id"] and audit["details"] == {"seconds": 5}
    assert [f["type"] for f in await alice.sync()] == [], "audit records are for moderators only"
    assert (await console.request({"type": "publish.offer", "id": "o", "sdp": "v=0\r\n"}))[
        "code"
    ] == "not_allowed"

    await console.ws.close()
    assert (await mod.recv_type("observer.left"))["participant_id"] == me["id"]
    assert [f["type"] for f in await alice.sync()] == []


# --- the client's parts, without a terminal ---------------------------------------------------------


def watching() -> Console:
    console = Console.watching(["s1", "s2"])
    console.stages["s1"].joined(
        {
            "participant": {"id": "p-me", "name": "Console: M", "role": "moderator", "observer": True},
            "stage": {"id": "s1", "title": "Grand rounds", "state": "live", "locked": False},
            "participants": [
                {"id": "p-a", "name": "Dr Alice Smith", "role": "speaker"},
                {"id": "p-b", "name": "Bob", "role": "audience"},
            ],
            "state": {"comments": [{"id": "c-1", "author_name": "Bob", "text": "hi", "author_id": "p-b"}]},
        }
    )
    return console


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "mute alice audio",
            {"type": "moderation.mute", "participant_id": "p-a", "kind": "audio", "muted": True},
        ),
        (
            "unmute p-a video",
            {"type": "moderation.mute", "participant_id": "p-a", "kind": "video", "muted": False},
        ),
        ("mute Bob chat", {"type": "chat.mute", "participant_id": "p-b", "muted": True}),
        (
            'ban "Dr Alice Smith" was rude',
            {"type": "moderation.ban", "participant_id": "p-a", "reason": "was rude"},
        ),
        ("remove bob", {"type": "moderation.remove", "participant_id": "p-b", "reason": ""}),
        ("unshare alice", {"type": "moderation.stop_share", "participant_id": "p-a"}),
        ("role bob moderator", {"type": "role.set", "participant_id": "p-b", "role": "moderator"}),
        ("pin off", {"type": "comment.pin", "comment_id": None}),
        ("slow 30", {"type": "chat.slow_mode", "seconds": 30}),
        (
            'poll "Best drug?" A "B C"',
            {"type": "poll.create", "question": "Best drug?", "options": ["A", "B C"]},
        ),
        ("record stop", {"type": "recording.stop"}),
        ("lock off", {"type": "stage.lock", "locked": False}),
        ("end s1", {"type": "stage.end"}),
    ],
)
def test_commands_become_requests_for_the_current_stage(line: str, message: dict[str, Any]) -> None:
    assert parse(line, watching()) == Request("s1", {**message, "stage": "s1"})


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("mute alice", "usage: mute|unmute"),
        ("mute alice sound", "the kind is one of audio, video, chat"),
        ("remove carol", "nobody called 'carol'"),
        ("slow soon", "number of seconds"),
        ('poll "Q?" only', "usage: poll"),
        ("end", "type `end s1` to confirm"),
        ('remove "Dr', "cannot read that line"),
        ("frobnicate", "unknown command"),
        ("who s9", "not watching stage 's9'"),
    ],
)
def test_bad_command_lines_say_why(line: str, error: str) -> None:
    with pytest.raises(UsageError, match=re.escape(error)):
        parse(line, watching())


def test_local_commands_and_blank_lines() -> None:
    assert parse("who s2", watching()) == Local("who", ["s2"])
    assert parse("exit", watching()) == Local("quit", [])
    assert parse("   ", watching()) is None


def test_completion_offers_commands_then_what_each_argument_is() -> None:
    console = watching()
    assert [c[0] for c in completions(console, "re")] == ["remove", "record"]
    assert ('"Dr Alice Smith"', -2, "speaker p-a") in list(completions(console, "ban Dr"))
    assert [c[0] for c in completions(console, 'mute "dr a')] == ['"Dr Alice Smith"']
    assert [c[0] for c in completions(console, "mute bob ")] == ["audio", "video", "chat"]
    assert [c[0] for c in completions(console, "pin c")] == ["c-1"]
    assert [c[0] for c in completions(console, "use ")] == ["s1", "s2"]
    assert list(completions(console, "slow 3")) == []


def test_the_feed_names_people_and_keeps_the_audit_records() -> None:
    console = watching()
    record = {
        **{"type": "moderation.audit", "stage_id": "s1", "at": 0.0, "seq": 9, "details": {}},
        **{"actor": "p-me", "actor_identity": "m", "actor_name": "Console: M", "action": "moderation.ban"},
        **{"target": "p-b", "target_identity": "bob-id", "target_name": "Bob", "reason": "spam"},
    }
    line = follow(console, "s1", record)
    assert line is not None and 'moderation.audit     Console: M: moderation.ban Bob (bob-id) "spam"' in line
    left = follow(console, "s1", {"type": "participant.left", "participant_id": "p-b", "at": 0.0})
    assert left is not None and "Bob (p-b)" in left and "p-b" not in console.stages["s1"].people
    assert len(console.audits) == 1
    assert follow(console, "s1", {"type": "ok", "id": 3}) is None
