"""Command lines: the command table, ``parse`` (a line to a wire request or a local command) and the
completion candidates of each argument. Plain code, no terminal, no socket."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from server.console.feed import table
from server.console.model import Console, StageCopy, UsageError


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
    "unshare": Command("unshare NAME|ID", "stop someone's screen share (their camera goes on)", ("person",),
                       _on_person("moderation.stop_share", "unshare NAME|ID")),
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
