"""The file profile store (recording/profiles.py): corrections merge, survive a new store (a restart)
and another process's writes (``refresh``), are bounded and validated, and ``delete`` forgets them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recording.profiles import FileProfileStore, ProfileError, check_changes, field_hash


async def test_corrections_merge_persist_and_are_seen_by_another_store(tmp_path: Path) -> None:
    a, b = FileProfileStore(tmp_path / "people"), FileProfileStore(tmp_path / "people")
    assert a.get_name("alice@x") is None
    await a.put("alice@x", {"name": "Alice M"}, 10.0)
    profile = await a.put("alice@x", {"title": "Dr"}, 11.0)
    assert dict(profile.fields) == {"name": "Alice M", "title": "Dr"} and profile.updated_at == 11.0
    assert a.get_name("alice@x") == "Alice M"
    version = b.version
    await b.refresh()
    assert b.get_name("alice@x") == "Alice M" and b.version > version
    await b.refresh()
    assert b.version == version + 1, "nothing changed: the mirror (and the readers' caches) stay"
    await b.put("bob@x", {"name": "Robert"}, 12.0)
    await a.refresh()
    assert (a.get_name("alice@x"), a.get_name("bob@x")) == ("Alice M", "Robert")
    path = tmp_path / "people" / "profiles.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p["identity"] for p in json.loads(path.read_text())["profiles"]] == ["alice@x", "bob@x"]
    assert not list(path.parent.glob(".profiles.json.*.tmp"))
    assert await a.delete("alice@x") and not await a.delete("alice@x")
    await b.refresh()
    assert b.get_name("alice@x") is None and b.get_name("bob@x") == "Robert"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({}, "invalid_profile"),
        ({"shoe_size": "9"}, "invalid_profile"),
        ({"name": ""}, "invalid_profile"),
        ({"name": "   "}, "invalid_profile"),
        ({"name": "x" * 65}, "invalid_profile"),
        ({"title": "x" * 201}, "invalid_profile"),
        ({"name": 3}, "invalid_profile"),
        ({"name": "a\x00b"}, "bad_text"),
        ({"name": "bad\ud800"}, "bad_text"),
    ],
)
def test_bad_corrections_are_refused_with_a_code(changes: dict[str, object], code: str) -> None:
    with pytest.raises(ProfileError) as caught:
        check_changes(changes)
    assert caught.value.code == code


def test_a_field_hash_binds_the_value_to_the_person_and_the_field() -> None:
    h = field_hash("alice@x", "name", "Alice")
    assert len(h) == 64 and "Alice" not in h
    assert h != field_hash("bob@x", "name", "Alice") != field_hash("alice@x", "title", "Alice")
