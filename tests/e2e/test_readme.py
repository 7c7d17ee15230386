"""The README's "Using it", followed literally in Chromium (issue 11, item 10).

The commands, the line the node prints and the buttons' labels are read from README.md, so README and
product cannot drift apart: rename a button and either the README follows or this test fails. The node
is the README's ``python3 -m server`` (no flags: the port comes from ``MEDSTAGE_PORT``, and ``HOME`` is a
temporary directory so the default recordings directory is too), and ``python3 -m recording verify`` runs
from another working directory, as a user would.

The "Several nodes" block's Redis command is run too: it must not leave files in the checkout.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.conftest import ROOT, free_port
from tests.e2e.conftest import (
    StagePage,
    answer_consent,
    check_errors,
    unexpected_errors,
    wait_for_event,
    watch,
)

pytestmark = [pytest.mark.e2e]

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the README's ``## title`` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def steps() -> dict[int, str]:
    """The numbered steps of "Using it": {1: text of step 1, ...}; a step goes on while its lines are
    indented (or blank) and ends at the next number or at the first paragraph that is not indented."""
    found: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in section("Using it").splitlines():
        start = re.match(r"(\d+)\. (.*)", line)
        if start:
            current = found.setdefault(int(start.group(1)), [start.group(2)])
        elif current is not None and (line.startswith(" ") or not line.strip()):
            current.append(line)
        else:
            current = None
    return {number: "\n".join(lines) for number, lines in found.items()}


def labels(step: str) -> list[str]:
    """The button labels a step names, in order (the README sets them in bold)."""
    return re.findall(r"\*\*(.+?)\*\*", step)


def code(step: str) -> list[str]:
    """The inline code spans of a step, in order."""
    return re.findall(r"`([^`\n]+)`", step)


def clean_env(home: Path) -> dict[str, str]:
    """This environment without medstage settings: the README's defaults, with HOME in the test's
    temporary directory and this checkout's code (tests use pythonpath ".")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDSTAGE_", "XDG_"))}
    return {**env, "HOME": str(home), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def run_as_documented(command: str) -> list[str]:
    """A README command line as argv; ``python3`` is this interpreter (the same one the suite uses)."""
    argv = shlex.split(command)
    assert argv[0] == "python3", command
    return [sys.executable, *argv[1:]]


@dataclass
class DocumentedNode:
    proc: subprocess.Popen[bytes]
    output: Path
    start_line: str
    url: str

    def log(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def documented_node(tmp_path: Path, home: Path) -> Iterator[DocumentedNode]:
    """Step 1: ``python3 -m server`` from the checkout, on a free port; waits for the line it prints."""
    command, printed = code(steps()[1])[:2]
    port = free_port()
    output = tmp_path / "node.out"
    with open(output, "wb") as sink:
        proc = subprocess.Popen(
            run_as_documented(command),
            cwd=ROOT,
            env={**clean_env(home), "MEDSTAGE_PORT": str(port)},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    node = DocumentedNode(proc, output, "", "")
    try:
        deadline = time.monotonic() + 30
        while not node.start_line:
            text = node.log()
            node.start_line = next((x for x in text.splitlines() if x.startswith("medstage is running")), "")
            assert proc.poll() is None, f"node exited with {proc.returncode}:\n{text}"
            assert time.monotonic() < deadline, f"the node printed no start-up line in 30 s:\n{text}"
            time.sleep(0.05)
        expected = printed.replace(":8080/", f":{port}/")
        assert node.start_line.startswith(expected), (node.start_line, printed)
        node.url = re.search(r"open (http://\S+?)/?\s", node.start_line + " ").group(1)  # type: ignore[union-attr]
        yield node
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code_ = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code_ = proc.wait()
        print(f"--- node output ---\n{node.log()[-6000:]}")
    assert code_ == 0, f"node exited with {code_}"


@dataclass
class Tabs:
    """The browser tabs the test opens, each in its own context (a person), watched for errors."""

    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    opened: list[StagePage] = field(default_factory=list)

    async def open(self, name: str, url: str) -> StagePage:
        context = await self.browser.new_context(viewport={"width": 1280, "height": 720})
        self.contexts.append(context)
        page: Page = await context.new_page()
        tab = watch(page, name)
        self.opened.append(tab)
        await page.goto(url)
        return tab


@pytest_asyncio.fixture(loop_scope="session")
async def tabs(browser: Browser) -> AsyncIterator[Tabs]:
    """Tabs that fail the test on a console error, a failed request or an uncaught exception."""
    opened = Tabs(browser)
    yield opened
    for tab in opened.opened:
        print(f"--- {tab.name} ---")
        print("\n".join(tab.log[-60:]))
    unexpected = unexpected_errors(opened.opened)
    for context in opened.contexts:
        await context.close()
    check_errors(unexpected)


async def join_by_name(tab: StagePage, join_label: str, title: str) -> str:
    """The name dialog: it shows the stage's title; enter a name and press the README's join button."""
    await expect(tab.page.get_by_test_id("join-stage")).to_contain_text(title)
    await tab.page.get_by_test_id("join-name").fill(tab.name)
    await tab.page.get_by_role("button", name=join_label, exact=True).click()
    await tab.page.wait_for_function("window.medstage.state === 'joined'", timeout=10_000)
    return await tab.participant_id()


@pytest.mark.asyncio(loop_scope="session")
async def test_the_readme_using_it_steps_work_as_written(
    documented_node: DocumentedNode, tabs: Tabs, home: Path, tmp_path: Path
) -> None:
    step = steps()
    assert sorted(step) == [1, 2, 3, 4], step.keys()
    create_label, join_label, publish_label = labels(step[2])
    privacy_label, start_label, stop_label = labels(step[4])
    title = "Cardiology grand rounds"

    # 2. Open it, give the stage a title, create it; the name dialog; consent; "Go on stage".
    host = await tabs.open("Dr Host", documented_node.url + "/")
    await host.page.get_by_test_id("create-title").fill(title)
    await host.page.get_by_role("button", name=create_label, exact=True).click()
    await host.page.wait_for_url(re.compile(r"/s/[^/?]+\?role=host$"), timeout=10_000)
    await expect(host.page.get_by_test_id("join-role")).to_have_value("host")
    host_id = await join_by_name(host, join_label, title)
    await answer_consent(host)  # asked at once: the stage may be recorded
    await host.page.get_by_role("button", name=publish_label, exact=True).click()
    await host.page.wait_for_function(
        "window.medstage.publisherPc && window.medstage.publisherPc.connectionState === 'connected'",
        timeout=10_000,
    )

    # 3. The stage link is the page's address without ?role=host; a viewer enters a name and watches.
    stage_url = host.page.url.removesuffix("?role=host")
    stage_id = stage_url.rsplit("/s/", 1)[1]
    assert "/s/<id>" in step[3] and re.fullmatch(r"[A-Za-z0-9_-]+", stage_id), stage_url
    viewer = await tabs.open("Dr Viewer", stage_url)
    viewer_id = await join_by_name(viewer, join_label, title)
    await answer_consent(viewer, ["comments"])  # camera and microphone not recorded
    seen = await viewer.wait_for_video_of(host_id, frames=5, timeout_s=15)
    assert seen["ok"], f"the viewer does not see the host's video: {seen}"

    assert "?role=moderator" in step[3]
    moderator = await tabs.open("Dr Moderator", stage_url + "?role=moderator")
    await expect(moderator.page.get_by_test_id("join-role")).to_have_value("moderator")
    moderator_id = await join_by_name(moderator, join_label, title)
    await answer_consent(moderator)

    # 4. Everyone was asked when they joined; someone who has not decided yet is asked at Record.
    undecided = await tabs.open("Dr Undecided", stage_url)
    undecided_id = await join_by_name(undecided, join_label, title)
    await expect(undecided.page.get_by_test_id("consent-dialog")).to_be_visible()
    for tab in (host, viewer, moderator, undecided):
        await expect(tab.page.get_by_role("button", name=privacy_label, exact=True)).to_be_visible()

    await moderator.page.get_by_role("button", name=start_label, exact=True).click()
    started = await wait_for_event(moderator, "recording.started", timeout_s=10, by=moderator_id)
    session_id = started["session_id"]
    await wait_for_event(undecided, "consent.requested", participant_id=undecided_id, session_id=session_id)
    for tab in (host, viewer, moderator):
        await expect(tab.page.get_by_test_id("recording-indicator")).to_be_visible()
        asked = await tab.page.evaluate(
            "window.medstage.events.filter((e) => e.type === 'consent.requested').length"
        )
        assert asked == 0, f"{tab.name} decided when joining and was asked again"
        await expect(tab.page.get_by_test_id("consent-dialog")).to_have_count(0)
    await answer_consent(undecided, ["media", "comments"])
    await asyncio.sleep(1)  # a moment of recorded media
    await moderator.page.get_by_role("button", name=stop_label, exact=True).click()
    await wait_for_event(moderator, "recording.stopped", timeout_s=10, session_id=session_id)

    # The session is under the documented directory; `verify <session>` finds it from elsewhere.
    documented_root = next(c for c in code(step[4]) if c.startswith("~/") and "<session>" in c)
    stage_dir = home / documented_root.removeprefix("~/").split("<stage>")[0] / stage_id
    assert [p.name for p in stage_dir.iterdir()] == [session_id], list(stage_dir.iterdir())
    verify_line = next(
        line.split("#")[0].strip()
        for line in step[4].splitlines()
        if line.strip().startswith("python3 -m recording verify")
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = await asyncio.to_thread(
        subprocess.run,
        run_as_documented(verify_line.replace("<session>", session_id)),
        cwd=elsewhere,
        env=clean_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert run.stdout.startswith("ok"), run.stdout
    ledger = (stage_dir / session_id / "consent.jsonl").read_text(encoding="utf-8")
    for participant in (host_id, viewer_id, moderator_id, undecided_id):
        assert participant in ledger, f"no consent record of {participant} in the session's ledger"


def redis_line() -> str:
    block = re.search(r"```sh\n(.*?)```", section("Several nodes"), re.S)
    assert block, "no command block under Several nodes"
    return next(line for line in block.group(1).splitlines() if line.startswith("redis-server"))


def test_the_several_nodes_redis_command_leaves_no_files_in_the_checkout(tmp_path: Path) -> None:
    """Run where the README's block runs (the checkout: here a stand-in directory), on a free port and a
    temporary ``--dir``; Redis writes its append-only files and its snapshot, but not in the checkout."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    elsewhere = tmp_path / "redis-files"
    elsewhere.mkdir()
    argv = shlex.split(redis_line().split("#")[0].rstrip(" &"))
    assert "--dir" in argv, f"the README's redis-server writes into the working directory: {argv}"
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--dir") + 1] = str(elsewhere)
    proc = subprocess.Popen(argv, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"SET readme 1\r\nSHUTDOWN SAVE\r\n")  # SAVE: the snapshot too
                    conn.recv(100)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(checkout.iterdir()) == []
    assert {p.name for p in elsewhere.iterdir()} >= {"appendonlydir", "dump.rdb"}
