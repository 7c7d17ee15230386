"""The moderator console: ``python -m server.console --url URL --token TOKEN --stage ID [--stage ID ...]``.

A terminal client of ``GET /console`` (docs/console.md): the live feed of the stages it watches,
printed above a prompt (prompt_toolkit), moderator commands with completion and history, and tables
of stages, participants and audit records. One socket per stage, msgpack frames; it reconnects the
way the browser does (1001, 1006, 1011, 1012, 1013, 4010, with backoff; ``retry_after`` honoured).

``Console`` (what the stages look like, as the feed tells it), ``describe`` (one feed line per event)
and ``parse`` (a command line to a wire request) are plain code, testable without a terminal or a
socket; ``Link`` and ``main`` are the shell around them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

RECONNECT_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 4010})
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.5, 8.0
REPLY_TIMEOUT_S = 10.0
KEPT_COMMENTS = 200
HISTORY_FILE = Path("~/.medstage_console_history")

# --- the model: the watched stages as their feeds tell them ---------------------------------------


@dataclass
class StageCopy:
    """One watched stage: its info, people (consoles included, flagged ``observer``) and items."""

    id: str
    status: str = "connecting"  # connecting | live | reconnecting | closed: why
    info: dict[str, Any] = field(default_factory=dict)
    me: dict[str, Any] | None = None
    people: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: dict[str, dict[str, Any]] = field(default_factory=dict)
    questions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def joined(self, reply: dict[str, Any]) -> None:
        self.status = "live"
        self.me, self.info = reply["participant"], reply["stage"]
        self.people = {p["id"]: p for p in [*reply.get("participants", []), *reply.get("observers", [])]}
        self.people[self.me["id"]] = self.me
        self.restate(reply.get("state") or {})

    def restate(self, state: dict[str, Any]) -> None:
        self.comments = {c["id"]: c for c in state.get("comments", [])}
        self.polls = {p["id"]: p for p in state.get("polls", [])}
        self.questions = {q["id"]: q for q in state.get("questions", [])}

    def apply(self, msg: dict[str, Any]) -> None:
        """Follow one server message."""
        kind = msg.get("type")
        if kind in ("participant.joined", "participant.updated"):
            self.people[msg["participant"]["id"]] = msg["participant"]
        elif kind in ("participant.left", "observer.left"):
            self.people.pop(msg["participant_id"], None)
        elif kind == "observer.joined":
            pid = msg["participant_id"]
            self.people[pid] = {"id": pid, "name": msg["name"], "role": msg["role"], "observer": True}
        elif kind == "stage.updated":
            self.info = msg["stage"]
        elif kind == "stage.ended":
            self.info = {**self.info, "state": "ended"}
        elif kind == "comment.posted":
            self.comments[msg["comment"]["id"]] = msg["comment"]
            while len(self.comments) > KEPT_COMMENTS:
                del self.comments[next(iter(self.comments))]
        elif kind == "comment.deleted":
            self.comments.pop(msg["comment_id"], None)
        elif kind in ("poll.created", "poll.opened", "poll.closed"):
            self.polls[msg["poll"]["id"]] = msg["poll"]
        elif kind in ("question.asked", "question.updated"):
            self.questions[msg["question"]["id"]] = msg["question"]
        elif kind == "state":
            self.restate(msg["state"])

    def name(self, pid: Any) -> str:
        person = self.people.get(pid) if isinstance(pid, str) else None
        return str(person["name"]) if person else str(pid)

    def find(self, who: str) -> dict[str, Any]:
        """A person on the stage by id, by name, by the start of their name or of a word of it (case
        does not matter); more than one match is refused, naming them."""
        people = [p for p in self.people.values() if not p.get("observer")]
        lowered = who.lower()
        rules: list[Callable[[dict[str, Any]], bool]] = [
            lambda p: p["id"] == who,
            lambda p: str(p["name"]).lower() == lowered,
            lambda p: str(p["name"]).lower().startswith(lowered),
            lambda p: any(word.startswith(lowered) for word in str(p["name"]).lower().split()),
        ]
        for rule in rules:
            found = [p for p in people if rule(p)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                names = ", ".join(f"{p['name']} ({p['id']})" for p in found)
                raise UsageError(f"{who!r} is ambiguous: {names}")
        raise UsageError(f"nobody called {who!r} on stage {self.id} (try `who`)")


@dataclass
class Console:
    """The stages watched, the one commands go to, and the audit records seen."""

    stages: dict[str, StageCopy]
    current: str
    audits: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def watching(cls, stage_ids: Iterable[str]) -> Console:
        stages = {s: StageCopy(s) for s in stage_ids}
        return cls(stages, next(iter(stages)))

    def on_message(self, stage_id: str, msg: dict[str, Any]) -> str | None:
        """Follow ``msg``; the feed line to show, if any."""
        copy = self.stages[stage_id]
        text = describe(copy, msg)  # before apply: a leaving person's name is still known
        copy.apply(msg)
        if msg.get("type") == "moderation.audit":
            self.audits.append(msg)
        if text is None:
            return None
        return feed_line(stage_id, msg.get("type", "?"), text, msg.get("at"))


# --- the feed ---------------------------------------------------------------------------------------


def feed_line(stage_id: str, kind: str, text: str, at: Any = None) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(at if isinstance(at, (int, float)) else None))
    return f"{clock} {stage_id:<12} {kind:<20} {text}"


def _kinds(flags: Any) -> str:
    return "+".join(k for k, on in (flags or {}).items() if on)


def _person(p: dict[str, Any]) -> str:
    """``Dr Alice (speaker, p-1a2b)`` with what they do: publishing, mutes, hand."""
    notes = [p.get("role", "?")]
    if _kinds(p.get("publishing")):
        notes.append("publishing " + _kinds(p.get("publishing")))
    muted = _muted(p)
    if muted:
        notes.append("muted " + muted)
    if p.get("hand_raised"):
        notes.append("hand up")
    return f"{p.get('name')} ({', '.join(notes)}; {p.get('id')})"


def _muted(p: dict[str, Any]) -> str:
    """``audio(mod) chat``: kinds muted by the person, by a moderator ``(mod)``, and a chat mute."""
    own, by_mod = p.get("muted") or {}, p.get("moderator_muted") or {}
    kinds = [
        k + ("(mod)" if by_mod.get(k) else "") for k in ("audio", "video") if own.get(k) or by_mod.get(k)
    ]
    return " ".join(kinds + (["chat"] if p.get("chat_muted") else []))


def describe(copy: StageCopy, msg: dict[str, Any]) -> str | None:
    """The essentials of one server message, for the feed (None: not for the feed)."""
    kind, name = msg.get("type"), copy.name
    match kind:
        case "participant.joined" | "participant.updated":
            return _person(msg["participant"])
        case "participant.left" | "observer.left":
            return f"{name(msg['participant_id'])} ({msg['participant_id']})"
        case "observer.joined":
            return f"{msg['name']} ({msg['role']} console; {msg['participant_id']})"
        case "participant.removed":
            how = "banned" if msg.get("banned") else "removed"
            reason = f": {msg['reason']}" if msg.get("reason") else ""
            return f"{name(msg['participant_id'])} {how} by {name(msg.get('by'))}{reason}"
        case "moderation.audit":
            return audit_text(msg)
        case "stage.updated":
            info = msg["stage"]
            return f"{info['title']}: {info['state']}{', locked' if info.get('locked') else ''}"
        case "stage.ended":
            return "the stage has ended"
        case "hands.updated":
            return "hands: " + (", ".join(name(p) for p in msg["hands"]) or "none")
        case "invitation":
            return f"{name(msg['participant_id'])} invited to speak by {msg.get('by_name')}"
        case "invitation.answered":
            answer = "accepted" if msg.get("accepted") else "declined or lapsed"
            return f"{name(msg['participant_id'])} {answer} the invitation"
        case "chat.updated":
            seconds = msg.get("slow_mode_s")
            return f"slow mode {seconds} s" if seconds else "slow mode off"
        case "comment.posted":
            c = msg["comment"]
            return f"{c['author_name']}: {c['text']}  [{c['id']}]"
        case "comment.deleted":
            return f"comment {msg['comment_id']} deleted by {name(msg.get('by'))}"
        case "comment.pinned":
            c = msg.get("comment")
            return f"pinned {c['id']}: {c.get('author_name')}: {c.get('text')}" if c else "unpinned"
        case "reactions":
            return " ".join(f"{emoji} {n}" for emoji, n in msg.get("counts", {}).items())
        case "question.asked" | "question.updated":
            q = msg["question"]
            return f"{q['author_name']}: {q['text']}  [{q['id']}, {q['status']}, {q['votes']} votes]"
        case "poll.created" | "poll.opened" | "poll.closed":
            poll = msg["poll"]
            text = f"{poll['question']} {' / '.join(poll['options'])}  [{poll['id']}, {poll['status']}]"
            results = poll.get("results")
            return text + (f" results {results['counts']}" if results else "")
        case "poll.counts":
            return f"{msg['poll_id']}: {msg['counts']} ({msg['ballots']} ballots)"
        case "poll.voters":
            return f"{msg['poll_id']}: " + ", ".join(f"{name(p)} {c}" for p, c in msg["voters"].items())
        case "quiz.leaderboard":
            return ", ".join(f"{e['name']} {e['score']}" for e in msg.get("entries", []))
        case "consent.recorded":
            r = msg["record"]
            return (
                f"{r['name']}: {r['decision']} {'+'.join(r['scopes']) or 'nothing'} ({r['policy_version']})"
            )
        case "recording.started" | "recording.stopped":
            by = name(msg["by"]) if msg.get("by") else "the stage"
            reason = f": {msg['reason']}" if msg.get("reason") else ""
            return f"session {msg['session_id']} by {by}{reason}"
        case "state":
            return "the stage as you may see it now (refreshed)"
        case "ok" | "error" | "pong" | "joined" | "left" | "subscriber.offer" | "subscriber.ready":
            return None  # replies: the command that asked shows them
        case _:
            rest = {k: v for k, v in msg.items() if k not in ("type", "stage_id", "seq", "at")}
            return json.dumps(rest, ensure_ascii=False, default=str)


def audit_text(msg: dict[str, Any]) -> str:
    """``Dr Mod: moderation.ban Bob (bob-id) "spam" {…}``."""
    target = msg.get("target")
    if msg.get("target_name"):
        target = f"{msg['target_name']} ({msg.get('target_identity')})"
    parts = [f"{msg.get('actor_name')}: {msg.get('action')}"]
    if target:
        parts.append(str(target))
    if msg.get("reason"):
        parts.append(json.dumps(msg["reason"], ensure_ascii=False))
    if msg.get("details"):
        parts.append(" ".join(f"{k}={v}" for k, v in msg["details"].items()))
    return " ".join(parts)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Columns padded to their widest cell."""
    cells = [headers, *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def who_table(copy: StageCopy) -> str:
    rows = [
        [
            p["id"],
            p["name"],
            p["role"] + (" console" if p.get("observer") else ""),
            _kinds(p.get("publishing")) or "-",
            _muted(p) or "-",
            "up" if p.get("hand_raised") else "-",
        ]
        for p in sorted(copy.people.values(), key=lambda p: (bool(p.get("observer")), p["name"].lower()))
    ]
    return table(["id", "name", "role", "publishing", "muted", "hand"], rows)


def stages_table(console: Console) -> str:
    rows = []
    for copy in console.stages.values():
        people = sum(1 for p in copy.people.values() if not p.get("observer"))
        info = copy.info
        current = "*" if copy.id == console.current else ""
        locked = "yes" if info.get("locked") else "no"
        rows.append(
            [current + copy.id, info.get("title", ""), info.get("state", "?"), locked, people, copy.status]
        )
    return table(["stage", "title", "state", "locked", "people", "console"], rows)


def audit_table(console: Console) -> str:
    rows = [
        [
            time.strftime("%H:%M:%S", time.localtime(a.get("at"))),
            a.get("stage_id"),
            a.get("actor_name"),
            a.get("action"),
            a.get("target_name") or a.get("target") or "-",
            a.get("reason") or "-",
        ]
        for a in console.audits
    ]
    return (
        table(["time", "stage", "actor", "action", "target", "reason"], rows)
        if rows
        else "no audit records yet"
    )


# --- commands ---------------------------------------------------------------------------------------


class UsageError(Exception):
    """A command line that cannot become a request; the message says why."""


@dataclass(frozen=True)
class Command:
    usage: str
    summary: str
    args: tuple[str | tuple[str, ...], ...] = ()  # what each argument completes to (kinds, or choices)
    build: Callable[[StageCopy, list[str]], dict[str, Any]] | None = None  # None: a local command


@dataclass(frozen=True)
class Request:
    """A wire request for one stage."""

    stage: str
    message: dict[str, Any]


@dataclass(frozen=True)
class Local:
    """A command the console answers itself (tables, help, ``use``, ``quit``)."""

    name: str
    args: list[str]


def _need(args: list[str], count: int, usage: str) -> None:
    if len(args) < count:
        raise UsageError(f"usage: {usage}")


def _pick(value: str, choices: dict[str, Any], what: str) -> Any:
    if value.lower() not in choices:
        raise UsageError(f"{what} is one of {', '.join(choices)}")
    return choices[value.lower()]


def _on_person(type_: str, usage: str) -> Callable[[StageCopy, list[str]], dict[str, Any]]:
    def build(copy: StageCopy, args: list[str]) -> dict[str, Any]:
        _need(args, 1, usage)
        return {"type": type_, "participant_id": copy.find(args[0])["id"]}

    return build


def _mute(muted: bool) -> Callable[[StageCopy, list[str]], dict[str, Any]]:
    def build(copy: StageCopy, args: list[str]) -> dict[str, Any]:
        _need(args, 2, "mute|unmute NAME|ID audio|video|chat")
        pid = copy.find(args[0])["id"]
        kind = _pick(args[1], {k: k for k in KINDS}, "the kind")
        if kind == "chat":
            return {"type": "chat.mute", "participant_id": pid, "muted": muted}
        return {"type": "moderation.mute", "participant_id": pid, "kind": kind, "muted": muted}

    return build


def _with_reason(type_: str, usage: str) -> Callable[[StageCopy, list[str]], dict[str, Any]]:
    def build(copy: StageCopy, args: list[str]) -> dict[str, Any]:
        _need(args, 1, usage)
        return {"type": type_, "participant_id": copy.find(args[0])["id"], "reason": " ".join(args[1:])}

    return build


def _on_item(type_: str, key: str, usage: str) -> Callable[[StageCopy, list[str]], dict[str, Any]]:
    def build(copy: StageCopy, args: list[str]) -> dict[str, Any]:
        _need(args, 1, usage)
        return {"type": type_, key: args[0]}

    return build


def _role(copy: StageCopy, args: list[str]) -> dict[str, Any]:
    _need(args, 2, "role NAME|ID moderator|audience")
    role = _pick(args[1], {"moderator": "moderator", "audience": "audience"}, "the role")
    return {"type": "role.set", "participant_id": copy.find(args[0])["id"], "role": role}


def _pin(copy: StageCopy, args: list[str]) -> dict[str, Any]:
    _need(args, 1, "pin COMMENT_ID|off")
    return {"type": "comment.pin", "comment_id": None if args[0].lower() == "off" else args[0]}


def _slow(copy: StageCopy, args: list[str]) -> dict[str, Any]:
    _need(args, 1, "slow SECONDS")
    if not args[0].isdigit():
        raise UsageError("slow mode is a number of seconds (0: off)")
    return {"type": "chat.slow_mode", "seconds": int(args[0])}


def _poll(copy: StageCopy, args: list[str]) -> dict[str, Any]:
    _need(args, 3, 'poll "Question?" OPTION OPTION [OPTION ...]')
    return {"type": "poll.create", "question": args[0], "options": args[1:]}


def _record(copy: StageCopy, args: list[str]) -> dict[str, Any]:
    _need(args, 1, "record start|stop")
    return {"type": _pick(args[0], {"start": "recording.start", "stop": "recording.stop"}, "record")}


def _lock(copy: StageCopy, args: list[str]) -> dict[str, Any]:
    _need(args, 1, "lock on|off")
    return {"type": "stage.lock", "locked": _pick(args[0], {"on": True, "off": False}, "lock")}


def _end(copy: StageCopy, args: list[str]) -> dict[str, Any]:
    if args != [copy.id]:
        raise UsageError(f"this ends stage {copy.id} for everyone: type `end {copy.id}` to confirm")
    return {"type": "stage.end"}


def _start(copy: StageCopy, args: list[str]) -> dict[str, Any]:
    return {"type": "stage.start"}


KINDS = ("audio", "video", "chat")

COMMANDS: dict[str, Command] = {
    "stages": Command("stages", "the stages watched (* marks the current one)"),
    "who": Command("who [STAGE]", "the people of a stage", ("stage",)),
    "use": Command("use STAGE", "send the next commands to STAGE", ("stage",)),
    "mute": Command("mute NAME|ID audio|video|chat", "mute a speaker (or their chat)", ("person", KINDS),
                    _mute(True)),
    "unmute": Command("unmute NAME|ID audio|video|chat", "lift a moderator mute", ("person", KINDS),
                      _mute(False)),
    "remove": Command("remove NAME|ID [reason]", "disconnect someone (they may come back)", ("person",),
                      _with_reason("moderation.remove", "remove NAME|ID [reason]")),
    "ban": Command("ban NAME|ID [reason]", "disconnect someone for good", ("person",),
                   _with_reason("moderation.ban", "ban NAME|ID [reason]")),
    "invite": Command("invite NAME|ID", "invite someone to speak", ("person",),
                      _on_person("speaker.invite", "invite NAME|ID")),
    "demote": Command("demote NAME|ID", "move a speaker back to the audience", ("person",),
                      _on_person("speaker.demote", "demote NAME|ID")),
    "lower": Command("lower NAME|ID", "lower someone's raised hand", ("person",),
                     _on_person("hand.lower", "lower NAME|ID")),
    "role": Command("role NAME|ID moderator|audience", "make someone moderator or audience (host only)",
                    ("person", ("moderator", "audience")), _role),
    "delete": Command("delete COMMENT_ID", "delete a comment", ("comment",),
                      _on_item("comment.delete", "comment_id", "delete COMMENT_ID")),
    "pin": Command("pin COMMENT_ID|off", "pin a comment, or unpin", ("comment",), _pin),
    "slow": Command("slow SECONDS", "slow mode: one comment per person per SECONDS (0: off)", (), _slow),
    "answer": Command("answer QUESTION_ID", "mark a question answered", ("question",),
                      _on_item("question.answer", "question_id", "answer QUESTION_ID")),
    "dismiss": Command("dismiss QUESTION_ID", "dismiss a question", ("question",),
                       _on_item("question.dismiss", "question_id", "dismiss QUESTION_ID")),
    "poll": Command('poll "Question?" OPTION OPTION ...', "create a draft poll", (), _poll),
    "open": Command("open POLL_ID", "open a poll", ("poll",),
                    _on_item("poll.open", "poll_id", "open POLL_ID")),
    "close": Command("close POLL_ID", "close a poll", ("poll",),
                     _on_item("poll.close", "poll_id", "close POLL_ID")),
    "record": Command("record start|stop", "start or stop recording", (("start", "stop"),), _record),
    "lock": Command("lock on|off", "admit nobody new, or admit again", (("on", "off"),), _lock),
    "start": Command("start", "start a scheduled stage (host only)", (), _start),
    "end": Command("end STAGE", "end the stage for everyone (host only; name it to confirm)", ("stage",),
                   _end),
    "audit": Command("audit", "the audit records seen"),
    "help": Command("help", "this list"),
    "quit": Command("quit", "leave (or Ctrl-D)"),
}  # fmt: skip


def split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"cannot read that line: {exc}") from None


def parse(line: str, console: Console) -> Request | Local | None:
    """A command line: a request for the current stage, a local command, or None (blank)."""
    words = split(line)
    if not words:
        return None
    name, args = words[0].lower(), words[1:]
    if name == "exit":
        name = "quit"
    command = COMMANDS.get(name)
    if command is None:
        raise UsageError(f"unknown command {words[0]!r} (try `help`)")
    if command.build is None:
        if name in ("who", "use") and args and args[0] not in console.stages:
            raise UsageError(f"not watching stage {args[0]!r} (watching {', '.join(console.stages)})")
        return Local(name, args)
    copy = console.stages[console.current]
    message = command.build(copy, args)
    return Request(copy.id, {**message, "stage": copy.id})


def help_text() -> str:
    return table(["command", "what it does"], [[c.usage, c.summary] for c in COMMANDS.values()])


def candidates(console: Console, kind: str | tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """Completions of one argument, with what they are."""
    if isinstance(kind, tuple):
        yield from ((choice, "") for choice in kind)
        return
    copy = console.stages[console.current]
    if kind == "stage":
        yield from ((s, c.info.get("title", "")) for s, c in console.stages.items())
    elif kind == "person":
        for p in copy.people.values():
            if not p.get("observer"):
                yield p["name"], f"{p['role']} {p['id']}"
                yield p["id"], p["name"]
    elif kind == "comment":
        yield from (
            (c["id"], f"{c['author_name']}: {c['text']}"[:40]) for c in reversed(copy.comments.values())
        )
    elif kind == "poll":
        yield from ((p["id"], f"{p['status']}: {p['question']}"[:40]) for p in copy.polls.values())
    elif kind == "question":
        yield from ((q["id"], q["text"][:40]) for q in copy.questions.values())


def completions(console: Console, text: str) -> Iterator[tuple[str, int, str]]:
    """For the text before the cursor: (replacement, start position (<= 0), meta)."""
    current = _current_word(text)
    try:
        before = shlex.split(text[: len(text) - len(current)])
    except ValueError:
        return
    prefix = current.lstrip("\"'").lower()
    if not before:
        for name, command in COMMANDS.items():
            if name.startswith(prefix):
                yield name, -len(current), command.summary
        return
    named = COMMANDS.get(before[0].lower())
    position = len(before) - 1
    if named is None or position >= len(named.args):
        return
    for value, meta in candidates(console, named.args[position]):
        if value.lower().startswith(prefix):
            yield _quoted(value), -len(current), meta


def _current_word(text: str) -> str:
    try:
        shlex.split(text)
    except ValueError:  # inside quotes: the word starts at the opening quote
        return text[max(text.rfind('"'), text.rfind("'")) :]
    return "" if not text or text[-1].isspace() else text.split()[-1]


def _quoted(value: str) -> str:
    """A word as ``split`` reads it back: names with blanks in double quotes."""
    if not value or re.search(r"[\s'\"\\]", value):
        return '"' + re.sub(r'(["\\])', r"\\\1", value) + '"'
    return value


# --- the shell: sockets, prompt, output ----------------------------------------------------------------


class ConsoleCompleter(Completer):
    """Command names, then each command's arguments: people, comment, poll or question ids, choices."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        for text, start, meta in completions(self.console, document.text_before_cursor):
            yield Completion(text, start_position=start, display_meta=meta)


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
                line = self.app.console.on_message(self.stage_id, msg)
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


async def _prompt_loop(app: App, history_file: Path | None) -> None:
    """Lines from the terminal, with completion and history, while the feed prints above the prompt."""
    history: History = InMemoryHistory() if history_file is None else FileHistory(str(history_file))
    session: PromptSession[str] = PromptSession(history=history, completer=ConsoleCompleter(app.console))
    with patch_stdout(raw=True):
        while True:
            try:
                line = await session.prompt_async(lambda: f"{app.console.current}> ")
            except KeyboardInterrupt:
                continue  # Ctrl-C clears the line
            except EOFError:
                return
            if not await app.execute(line):
                return


async def _plain_loop(app: App) -> None:
    """Lines from a pipe (no terminal): the same commands, no prompt, once every stage is joined."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            for link in app.links.values():
                await link.settled.wait()
    while line := await asyncio.to_thread(sys.stdin.readline):
        if not await app.execute(line):
            return


async def run(url: str, token: str, stage_ids: list[str], history_file: Path | None) -> int:
    """The console until ``quit``, Ctrl-D, or every stage's socket closed for good (exit status 1)."""
    async with aiohttp.ClientSession() as http:
        app = App(http, url, token, stage_ids)
        async with asyncio.TaskGroup() as group:
            links = [group.create_task(link.run()) for link in app.links.values()]
            interactive = sys.stdin.isatty()
            ui = group.create_task(_prompt_loop(app, history_file) if interactive else _plain_loop(app))
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


def _usable(path: Path) -> Path | None:
    """The history file, created if need be; None (history in memory only) if it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        return None
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.console", description=__doc__.split("\n\n")[1])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the node (default: %(default)s)")
    parser.add_argument("--token", default=os.environ.get("MEDSTAGE_TOKEN"), help="or MEDSTAGE_TOKEN")
    parser.add_argument("--stage", action="append", required=True, help="a stage to watch (repeatable)")
    parser.add_argument("--history", default=str(HISTORY_FILE), help="history file (default: %(default)s)")
    parser.add_argument("--no-history-file", action="store_true", help="keep the history in memory only")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("a moderator token is needed: --token or MEDSTAGE_TOKEN")
    history = None if args.no_history_file else _usable(Path(args.history).expanduser())
    try:
        return asyncio.run(run(args.url, args.token, list(dict.fromkeys(args.stage)), history))
    except KeyboardInterrupt:
        return 130
