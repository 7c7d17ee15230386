"""The feed and the tables: one line per server message, and the tables of stages, people, audits."""

from __future__ import annotations

import json
import time
from typing import Any

from server.console.model import Console, StageCopy


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
    if _kinds(p.get("sharing")):
        notes.append("sharing screen " + _kinds(p.get("sharing")))
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
            p.get("quality") or "-",
        ]
        for p in sorted(copy.people.values(), key=lambda p: (bool(p.get("observer")), p["name"].lower()))
    ]
    return table(["id", "name", "role", "publishing", "muted", "hand", "quality"], rows)


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


def follow(console: Console, stage_id: str, msg: dict[str, Any]) -> str | None:
    """Follow ``msg`` on the console's copy of the stage; the feed line to show, if any."""
    text = describe(console.stages[stage_id], msg)  # before it applies: a leaver's name is still known
    console.follow(stage_id, msg)
    if text is None:
        return None
    return feed_line(stage_id, msg.get("type", "?"), text, msg.get("at"))
