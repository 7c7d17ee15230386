"""Helpers shared by the benchmarks (bench/forwarding.py, bench/fanout.py): child processes that die
with us, /proc readings (CPU, RSS, the machine's busy time), waiting for a node, a throwaway
redis-server, the machine's description and the warnings in a node's log."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # dev_token() imports server.auth
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
_children: list[asyncio.subprocess.Process] = []


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes -------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG = 1: the kernel sends SIGKILL to the child when we die, even by SIGKILL.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


async def spawn(
    *cmd: str, env: dict[str, str] | None = None, stdout: Any = None, stderr: Any = None, stdin: Any = None
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=ROOT,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    _children.append(proc)
    return proc


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    # Each child leads its own session (start_new_session), so its group id is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def stop(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    if proc.returncode is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            _signal_group(proc, signal.SIGKILL)
            await proc.wait()
    with contextlib.suppress(ValueError):
        _children.remove(proc)


def kill_all_children() -> None:
    """Last resort (atexit, signals): SIGKILL every process group we started."""
    for proc in list(_children):
        if proc.returncode is None:
            _signal_group(proc, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- /proc -----------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """pid and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid and its live descendants (all threads), in seconds."""
    ticks = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time spent by the whole machine (all cores, not idle or iowait), in seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


def rss_bytes(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
    return total


# --- the node under test ----------------------------------------------------------------------


async def wait_ready(
    proc: asyncio.subprocess.Process, base: str, log_path: Path, label: str, path: str = "/healthz"
) -> None:
    """Wait until the server answers ``path`` with 200 (30 s at most)."""
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 30
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"{label} exited with {proc.returncode}; see {log_path}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{base}{path}") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label} did not answer {path} in 30 s; see {log_path}")
            await asyncio.sleep(0.1)


def dev_token(
    stage: str | None = None, role: str | None = None, identity: str = "bench", **claims: Any
) -> str:
    """A token from the development key, which a node without configured API keys accepts."""
    from server.auth import Authenticator

    return Authenticator({}).mint(identity, stage=stage, role=role, **claims)


async def create_stage(base: str, stage: str) -> None:
    headers = {"Authorization": f"Bearer {dev_token(admin=True)}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/api/stages", json={"id": stage}, headers=headers) as resp,
    ):
        if resp.status != 201:
            raise RuntimeError(f"POST /api/stages: {resp.status} {await resp.text()}")


async def wait_ready_and_create_stage(
    proc: asyncio.subprocess.Process, base: str, log_path: Path, label: str, stage: str
) -> None:
    """Wait until the server answers /healthz (30 s at most), then create the bench's stage."""
    await wait_ready(proc, base, log_path, label)
    await create_stage(base, stage)


def server_log_problems(path: Path, limit: int = 8) -> list[str]:
    """Warnings, errors and tracebacks in the server's log (JSON lines, or text), deduplicated."""
    seen: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                if entry.get("level") not in ("warning", "error", "critical"):
                    continue
                extra = entry.get("exc", "").strip().splitlines()[-1:] if entry.get("exc") else []
                key = f"{entry.get('level')} {entry.get('logger')}: {entry.get('msg')}" + (
                    f" ({extra[0]})" if extra else ""
                )
            elif "Traceback" in line or "Error" in line or "WARNING" in line or "ERROR" in line:
                key = line.strip()
            else:
                continue
            seen[key] = seen.get(key, 0) + 1
    return [f"{k} (x{v})" if v > 1 else k for k, v in list(seen.items())[:limit]]


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return f"nproc {os.cpu_count()}, CPU {model}, Python {sys.version.split()[0]}"


# --- redis-server ------------------------------------------------------------------------------


@dataclass
class Redis:
    """A redis-server of our own, in memory only (no RDB, no AOF), for the nodes of one run."""

    port: int
    proc: asyncio.subprocess.Process
    log_path: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


async def _ping(port: int) -> bool:
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await reader.readline()).startswith(b"+PONG")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return False


async def start_redis(logdir: Path, tag: str) -> Redis:
    """``redis-server`` (the Debian package) on a free port, its files in ``logdir``; returns once it
    answers PING (10 s at most)."""
    port = free_port()
    log_path = logdir / f"redis-{tag}.log"
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(logdir), "--logfile", str(log_path)]
    with log_path.open("ab") as out:
        proc = await spawn(*cmd, stdout=out, stderr=asyncio.subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not await _ping(port):
        if proc.returncode is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer PING in 10 s; see {log_path}")
        await asyncio.sleep(0.05)
    return Redis(port, proc, log_path)


async def redis_call(port: int, *args: str) -> str:
    """One command on a fresh connection; the reply (status, integer or bulk string) as text."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        writer.write(request.encode())
        await writer.drain()
        line = (await reader.readline()).rstrip(b"\r\n")
        if line[:1] == b"-":
            raise RuntimeError(f"redis {args[0]}: {line[1:].decode()}")
        if line[:1] == b"$":
            size = int(line[1:])
            return "" if size < 0 else (await reader.readexactly(size + 2))[:-2].decode()
        return line[1:].decode()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
