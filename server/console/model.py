"""What the watched stages look like, as their feeds tell them: plain code, no terminal, no socket.

``StageCopy`` follows one stage's server messages (the reducer); ``Console`` holds the stages watched,
the one commands go to and the audit records seen, and turns each message into its feed line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

KEPT_COMMENTS = 200


class UsageError(Exception):
    """A command line that cannot become a request; the message says why."""


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

    def follow(self, stage_id: str, msg: dict[str, Any]) -> None:
        """Follow ``msg``: the stage's copy and the audit records (the feed line: ``feed.follow``)."""
        self.stages[stage_id].apply(msg)
        if msg.get("type") == "moderation.audit":
            self.audits.append(msg)
