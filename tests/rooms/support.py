"""Helpers for the domain tests: a populated stage, and a check that a refused command changed nothing."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from rooms.errors import DomainError
from rooms.events import Event
from rooms.roles import Role
from rooms.stage import Stage, StageSettings, StageState

# Who is on the stage built by ``populated``.
HOST, MOD, SPEAKER, ALICE, BOB = "h", "m", "s", "a", "b"


def populated(
    state: StageState = StageState.LIVE, settings: StageSettings | None = None, **overrides: Any
) -> Stage:
    """A stage with a host, a moderator, a speaker and two audience members (Alice and Bob)."""
    settings = settings or StageSettings(**overrides)
    stage = Stage("s1", "Grand rounds", 0.0, settings=settings, state=state)
    stage.join(HOST, "Dr Host", Role.HOST, 0.0)
    stage.join(MOD, "Dr Mod", Role.MODERATOR, 0.0)
    stage.join(SPEAKER, "Dr Speaker", Role.SPEAKER, 0.0)
    stage.join(ALICE, "Alice", Role.AUDIENCE, 0.0)
    stage.join(BOB, "Bob", Role.AUDIENCE, 0.0)
    return stage


def refused(
    stage: Stage, error: type[DomainError], command: Callable[..., object], *args: object
) -> DomainError:
    """Run ``command(*args)``, expect ``error``, and check the stage is exactly as it was before."""
    before = copy.deepcopy(stage)
    with pytest.raises(error) as info:
        command(*args)
    assert stage == before, f"refused command ({error.code}) changed the stage"
    return info.value


def types(events: list[Event]) -> list[str]:
    """The wire types of ``events``, in order."""
    return [type(e).__struct_config__.tag for e in events]  # type: ignore[misc]


def last(stage: Stage, kind: type[Event]) -> Any:
    """The latest logged event of ``kind``."""
    return next(e for e in reversed(stage.log.events) if isinstance(e, kind))
