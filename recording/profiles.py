"""People's corrected profiles (issue 15, correction): a display name and a few fields, by identity.

Recordings keep the name a person had when they joined (the manifest, the timeline); what shows the
recording later (the session report, the playback page) asks ``Names`` first, so a correction shows
everywhere, including recordings made before it, without rewriting a file. ``Names`` is a plain
callable (identity -> current display name, None: no correction) so that the readers stay pure.

``ProfileStore`` keeps every profile in memory (``get``, ``get_name``: synchronous, for readers running
in threads) and in its storage: ``FileProfileStore`` (one node: ``profiles.json`` beside the people
ledger, written new-then-renamed) or the Redis one (server/backend/redis_profiles.py: several nodes).
``refresh`` brings the memory up to date with the storage (another node's correction) before a read.

What a profile may hold is bounded: a name of 1-64 characters (as at a join), at most ``MAX_FIELDS``
other fields of known names, each at most ``MAX_VALUE`` characters, all valid Unicode text.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rooms.text import find_bad_text

__all__ = [
    "FIELDS",
    "MAX_NAME",
    "MAX_VALUE",
    "FileProfileStore",
    "Names",
    "Profile",
    "ProfileError",
    "ProfileStore",
    "check_changes",
    "field_hash",
]

Names = Callable[[str], str | None]

MAX_NAME = 64  # a display name, as at a join (server/wire.py DisplayName)
MAX_VALUE = 200
# The profile fields a person may correct besides the name (others are refused: nothing unbounded).
FIELDS = ("name", "title", "affiliation", "pronouns", "locale")
FILENAME = "profiles.json"


class ProfileError(ValueError):
    """A correction refused: ``code`` is stable (``invalid_profile``, ``bad_text``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Profile:
    """A person's corrected fields (only those ever corrected) and when they were last changed."""

    identity: str
    fields: Mapping[str, str] = field(default_factory=dict)
    updated_at: float = 0.0

    @property
    def name(self) -> str | None:
        return self.fields.get("name")

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "fields": dict(self.fields), "updated_at": self.updated_at}

    @classmethod
    def from_dict(cls, data: Any) -> Profile:
        if not isinstance(data, Mapping) or not isinstance(data.get("identity"), str):
            raise ValueError("not a profile")
        fields = data.get("fields") or {}
        if not isinstance(fields, Mapping):
            raise ValueError("a profile's fields are an object")
        at = data.get("updated_at")
        return cls(
            identity=data["identity"],
            fields={str(k): str(v) for k, v in fields.items() if isinstance(v, str)},
            updated_at=float(at) if isinstance(at, int | float) else 0.0,
        )


def check_changes(changes: Mapping[str, Any]) -> dict[str, str]:
    """The changes a correction asks for, validated (``ProfileError`` otherwise)."""
    if not changes:
        raise ProfileError("invalid_profile", "a correction names at least one field")
    out: dict[str, str] = {}
    for name, value in changes.items():
        if name not in FIELDS:
            raise ProfileError("invalid_profile", f"{name!r} is not a profile field ({', '.join(FIELDS)})")
        if not isinstance(value, str):
            raise ProfileError("invalid_profile", f"{name} is a string")
        if find_bad_text(value) is not None or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ProfileError("bad_text", f"{name} holds characters no profile field may hold")
        limit = MAX_NAME if name == "name" else MAX_VALUE
        if not 0 < len(value) <= limit or not value.strip():
            raise ProfileError("invalid_profile", f"{name} is 1-{limit} characters, not only spaces")
        out[name] = value
    return out


def field_hash(identity: str, name: str, value: str) -> str:
    """What the people ledger keeps of a corrected value: a SHA-256 that binds it to the person and
    the field (never the value itself: the ledger outlives any erasure)."""
    return hashlib.sha256(json.dumps([identity, name, value], ensure_ascii=False).encode("utf-8")).hexdigest()


class ProfileStore(abc.ABC):
    """Every corrected profile, mirrored in memory for synchronous readers (module docstring)."""

    def __init__(self) -> None:
        self._profiles: dict[str, Profile] = {}
        self.version = 0  # changes whenever the mirror does: a cache of what used names is stale then

    def get(self, identity: str) -> Profile | None:
        return self._profiles.get(identity)

    def get_name(self, identity: str) -> str | None:
        """``Names``: the corrected display name, None when there is none."""
        profile = self._profiles.get(identity)
        return None if profile is None else profile.name

    def _mirror(self, profiles: dict[str, Profile]) -> None:
        if profiles != self._profiles:
            self._profiles = profiles
            self.version += 1

    @abc.abstractmethod
    async def refresh(self) -> None:
        """Reload the mirror from the storage (another node's or process's corrections)."""

    @abc.abstractmethod
    async def put(self, identity: str, changes: Mapping[str, str], now: float) -> Profile:
        """Store ``changes`` (validated) over the person's profile; returns the profile stored."""

    @abc.abstractmethod
    async def delete(self, identity: str) -> bool:
        """Forget the person's profile (erasure); whether there was one."""


class FileProfileStore(ProfileStore):
    """All profiles in one JSON file (0600), rewritten new-then-renamed (fsynced) at each change;
    an ``flock`` on a lock file serialises writers of several processes on one disk."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.path = self.directory / FILENAME
        self._stamp: tuple[int, int] | None = None
        self._lock = asyncio.Lock()

    def _read(self) -> dict[str, Profile]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp = None
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return self._profiles
        data = json.loads(self.path.read_text(encoding="utf-8"))
        profiles = {}
        for item in data.get("profiles", []) if isinstance(data, dict) else []:
            profile = Profile.from_dict(item)
            profiles[profile.identity] = profile
        self._stamp = stamp
        return profiles

    def _write(self, profiles: dict[str, Profile]) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = {"version": 1, "profiles": [p.to_dict() for _, p in sorted(profiles.items())]}
        tmp = self.directory / f".{FILENAME}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(body, f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _change(self, fn: Callable[[dict[str, Profile]], Any]) -> Any:
        import fcntl

        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / ".profiles.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            profiles = dict(self._read())
            result = fn(profiles)
            self._write(profiles)
            self._stamp = None
            self._mirror(self._read())
            return result
        finally:
            os.close(fd)

    async def refresh(self) -> None:
        async with self._lock:
            self._mirror(await asyncio.to_thread(self._read))

    async def put(self, identity: str, changes: Mapping[str, str], now: float) -> Profile:
        checked = check_changes(changes)

        def put(profiles: dict[str, Profile]) -> Profile:
            old = profiles.get(identity)
            merged = {**(old.fields if old is not None else {}), **checked}
            profiles[identity] = profile = Profile(identity, merged, now)
            return profile

        async with self._lock:
            result: Profile = await asyncio.to_thread(self._change, put)
            return result

    async def delete(self, identity: str) -> bool:
        async with self._lock:
            found: bool = await asyncio.to_thread(
                self._change, lambda profiles: profiles.pop(identity, None) is not None
            )
            return found
