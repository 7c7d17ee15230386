"""The consent ledger: an intact chain verifies; an altered, removed or inserted record is named; a write
cut short by a crash is reported and can be dropped; ``python -m recording verify`` says so with its exit
status. (What the signed heads add: tests/recording/test_evidence.py.)"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from recording.ledger import GENESIS, Entry, Ledger, LedgerError, read_entries, truncate_incomplete, verify
from recording.signing import NodeKey, default_key_path
from rooms.consent import ConsentRecord
from tests.recording.signed import signed_session

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 26, 14, 3, 1, tzinfo=UTC).timestamp()  # record n is at T0 + n seconds


def record(n: int, **changes: object) -> ConsentRecord:
    fields: dict[str, object] = {
        "record_id": f"cr-{n}",
        "stage_id": "cardio",
        "session_id": "rec-1",
        "participant_id": "p-1a2b" if n == 4 else f"p-{n:04x}",
        "identity": f"id-{n}",
        "name": "Dr Ada Lovelace" if n % 2 else "Dr Grace Hopper",
        "scopes": ("comments", "media") if n % 3 else (),
        "policy_version": "2026-11",
        "decision": "granted" if n % 3 else "declined",
        "at": T0 + n,
        "method": "join_prompt",
    }
    return ConsentRecord(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.fixture
def node_key(tmp_path: Path) -> NodeKey:
    """The node's key where a node recording into ``tmp_path/recordings`` keeps it by default."""
    return NodeKey.load_or_create(default_key_path(tmp_path / "recordings"))


@pytest.fixture
def session(tmp_path: Path, node_key: NodeKey) -> Path:
    """A session directory ``<root>/cardio/rec-1`` whose ledger holds records 0-6, signed by the node's
    key after each append and at the stop, as the recorder does."""
    return signed_session(tmp_path / "recordings", node_key, [record(n) for n in range(7)])


def ledger_of(session: Path) -> Path:
    return session / "consent.jsonl"


def lines(session: Path) -> list[str]:
    return ledger_of(session).read_text(encoding="utf-8").splitlines(keepends=True)


def write(session: Path, new_lines: list[str]) -> None:
    ledger_of(session).write_text("".join(new_lines), encoding="utf-8")


def forged(index: int, prev: str, n: int = 99) -> str:
    """A well-formed entry with a correct hash, as a forger who knows the format would write it."""
    data = json.loads(json.dumps(msgspec.to_builtins(record(n, participant_id="p-forged"))))
    body = prev + json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + str(index)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return Entry(index, prev, data, digest).line() + "\n"


def entry(line: str) -> dict[str, object]:
    return json.loads(line)  # type: ignore[no-any-return]


# --- the format --------------------------------------------------------------------------------------


def test_each_line_is_an_entry_chained_to_the_one_before_by_sha256(session: Path) -> None:
    written = [entry(line) for line in lines(session)]
    assert [e["index"] for e in written] == list(range(7))
    assert written[0]["prev"] == "0" * 64 == GENESIS
    for before, after in itertools.pairwise(written):
        assert after["prev"] == before["hash"]
    for e in written:
        canonical = json.dumps(e["record"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(f"{e['prev']}{canonical}{e['index']}".encode()).hexdigest()
        assert e["hash"] == digest
    assert list(written[0]) == ["index", "prev", "record", "hash"]
    assert written[4]["record"] == {**msgspec.to_builtins(record(4)), "scopes": ["comments", "media"]}


def test_entries_read_back_what_was_appended(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "consent.jsonl")
    appended = [ledger.append(record(n)) for n in range(3)]
    assert ledger.entries() == appended == read_entries(tmp_path / "consent.jsonl")
    assert appended[2].record["name"] == "Dr Grace Hopper" and appended[1].record["scopes"] == [
        "comments",
        "media",
    ]
    assert ledger.count == 3 and ledger.head == appended[-1].hash


def test_a_plain_mapping_is_a_record_too_and_unicode_stays_readable(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "consent.jsonl")
    ledger.append({"participant_id": "p-1", "name": "Dr Åsa Ørsted", "at": 1.5})
    assert "Dr Åsa Ørsted" in (tmp_path / "consent.jsonl").read_text(encoding="utf-8")
    assert verify(tmp_path / "consent.jsonl").message() == "ok: 1 record"


def test_every_append_is_on_disk_before_it_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    ledger = Ledger(tmp_path / "consent.jsonl")
    ledger.append(record(0))
    assert len(synced) == 2  # the file, then (created) its directory
    ledger.append(record(1))
    assert len(synced) == 3


def test_a_reopened_ledger_continues_the_chain(session: Path) -> None:
    ledger = Ledger(ledger_of(session))
    assert (ledger.count, ledger.head) == (7, entry(lines(session)[-1])["hash"])
    appended = ledger.append(record(7))
    assert (appended.index, appended.prev) == (7, entry(lines(session)[-2])["hash"])
    assert verify(ledger_of(session)).message() == "ok: 8 records"


# --- verify ------------------------------------------------------------------------------------------


def test_an_intact_chain_verifies(session: Path) -> None:
    result = verify(ledger_of(session))
    assert result.ok and result.count == 7 and result.message() == "ok: 7 records"
    assert result.head == entry(lines(session)[-1])["hash"]


def test_an_empty_ledger_is_intact(tmp_path: Path) -> None:
    (tmp_path / "consent.jsonl").write_bytes(b"")
    assert verify(tmp_path / "consent.jsonl").message() == "ok: 0 records"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"decision":"granted"', '"decision":"grantee"'),  # one byte of the record
        ('"name":"Dr Grace Hopper"', '"name":"Dr Grace Hoppe!"'),
        ('"index":4', '"index":5'),  # its place
        ('"at":', '"at" '),  # one byte that breaks the JSON: still named, from what can be read
    ],
)
def test_one_byte_changed_in_a_record_names_it(session: Path, old: str, new: str) -> None:
    content = lines(session)
    assert old in content[4]
    content[4] = content[4].replace(old, new, 1)
    write(session, content)
    result = verify(ledger_of(session))
    assert (result.problem, result.index, result.line, result.count) == ("altered", 4, 5, 4)
    if new != '"at" ':
        assert result.message() == "record 4 was altered (participant p-1a2b at 2026-11-26T14:03:05Z)"
    else:
        assert result.message() == "record 4 was altered (participant p-1a2b)"


@pytest.mark.parametrize("field", ["hash", "prev"])
def test_one_byte_changed_in_a_hash_names_the_record(session: Path, field: str) -> None:
    content = lines(session)
    digest = str(entry(content[2])[field])
    flipped = ("1" if digest[10] == "0" else "0").join([digest[:10], digest[11:]])
    content[2] = content[2].replace(digest, flipped)
    write(session, content)
    result = verify(ledger_of(session))
    assert (result.problem, result.index) == ("altered", 2)


def test_the_last_record_altered_is_named(session: Path) -> None:
    content = lines(session)
    content[-1] = content[-1].replace('"join_prompt"', '"settings"')
    write(session, content)
    assert verify(ledger_of(session)).message() == (
        "record 6 was altered (participant p-0006 at 2026-11-26T14:03:07Z)"
    )


def test_a_record_rewritten_with_a_fresh_hash_is_named_by_the_broken_link(session: Path) -> None:
    content = lines(session)
    e = entry(content[3])
    content[3] = forged(3, str(e["prev"]))  # record 3 replaced, its own hash recomputed
    write(session, content)
    result = verify(ledger_of(session))
    assert (result.problem, result.index, result.participant_id, result.count) == (
        "altered",
        3,
        "p-forged",
        3,
    )


@pytest.mark.parametrize(("removed", "index"), [([4], 4), ([0], 0), ([2, 3], 2)])
def test_a_record_removed_is_named(session: Path, removed: list[int], index: int) -> None:
    content = [line for n, line in enumerate(lines(session)) if n not in removed]
    write(session, content)
    result = verify(ledger_of(session))
    assert (result.problem, result.index, result.missing, result.count) == (
        "removed",
        index,
        len(removed),
        index,
    )
    if len(removed) == 1:
        assert result.message() == f"record {index} was removed"
    else:
        assert result.message() == "records 2 to 3 were removed"


def test_a_forged_record_inserted_with_a_valid_hash_is_named(session: Path) -> None:
    content = lines(session)
    prev = str(entry(content[2])["hash"])
    content.insert(3, forged(3, prev))  # right index, right link, right hash: the next one no longer links
    write(session, content)
    result = verify(ledger_of(session))
    assert (result.problem, result.index, result.line, result.participant_id) == (
        "inserted",
        3,
        4,
        "p-forged",
    )
    assert result.message() == "record 3 was inserted (participant p-forged at 2026-11-26T14:04:40Z)"


@pytest.mark.parametrize(
    "extra",
    [
        "copy of an earlier entry",
        "copy of the entry before",
        "junk with a made-up hash",
        "blank line",
        "entry at the end",
    ],
)
def test_a_record_inserted_is_named(session: Path, extra: str) -> None:
    content = lines(session)
    at = 5
    if extra == "copy of an earlier entry":
        content.insert(at, content[1])
    elif extra == "copy of the entry before":
        content.insert(at, content[at - 1])
    elif extra == "junk with a made-up hash":
        content.insert(at, forged(at, str(entry(content[at - 1])["hash"])).replace('"hash":"', '"hash":"0'))
    elif extra == "blank line":
        content.insert(at, "\n")
    else:
        at = 7
        content.append(content[1])
    write(session, content)
    result = verify(ledger_of(session))
    assert (result.problem, result.index) == ("inserted", at), result.message()
    assert result.message().startswith(f"record {at} was inserted")


def test_any_one_byte_changed_anywhere_names_the_record_it_is_in(tmp_path: Path) -> None:
    path = tmp_path / "consent.jsonl"
    ledger = Ledger(path)
    for n in range(4):
        ledger.append(record(n))
    original = path.read_bytes().split(b"\n")[:-1]
    for k, line in enumerate(original):
        for offset in range(len(line)):
            changed = (
                line[:offset] + (b"y" if line[offset : offset + 1] == b"x" else b"x") + line[offset + 1 :]
            )
            path.write_bytes(b"\n".join([*original[:k], changed, *original[k + 1 :]]) + b"\n")
            result = verify(path)
            assert (result.problem, result.index) == ("altered", k), (k, offset, result.message())


def test_a_record_removed_or_inserted_anywhere_is_named(tmp_path: Path) -> None:
    path = tmp_path / "consent.jsonl"
    ledger = Ledger(path)
    for n in range(5):
        ledger.append(record(n))
    original = path.read_text().splitlines(keepends=True)
    for k in range(4):  # the last one only an anchor shows
        path.write_text("".join(original[:k] + original[k + 1 :]))
        assert verify(path).message() == f"record {k} was removed"
    for k in range(5):
        prev = str(entry(original[k - 1])["hash"]) if k else GENESIS
        path.write_text("".join([*original[:k], forged(k, prev), *original[k:]]))
        assert verify(path).message().startswith(f"record {k} was inserted (participant p-forged")


def test_reordered_records_do_not_verify(session: Path) -> None:
    content = lines(session)
    content[2], content[3] = content[3], content[2]
    write(session, content)
    result = verify(ledger_of(session))
    assert not result.ok and result.index == 2


# --- what only an anchor noted elsewhere shows ------------------------------------------------------


def test_without_an_anchor_the_last_record_removed_or_one_appended_goes_unseen(session: Path) -> None:
    write(session, lines(session)[:-1])
    assert verify(ledger_of(session)).message() == "ok: 6 records"
    write(session, [*lines(session), forged(6, str(entry(lines(session)[-1])["hash"]))])
    assert verify(ledger_of(session)).message() == "ok: 7 records"


def test_an_anchor_shows_the_last_records_removed(session: Path) -> None:
    anchor = (7, str(entry(lines(session)[-1])["hash"]))
    write(session, lines(session)[:-2])
    result = verify(ledger_of(session), anchor=anchor)
    assert (result.problem, result.index, result.missing) == ("removed", 5, 2)
    assert result.message() == "records 5 to 6 were removed"


def test_an_anchor_shows_a_chain_rewritten_to_its_end(session: Path) -> None:
    anchor = (7, str(entry(lines(session)[-1])["hash"]))
    content = lines(session)
    content[-1] = forged(6, str(entry(content[-2])["hash"]))
    write(session, content)
    assert verify(ledger_of(session)).ok
    result = verify(ledger_of(session), anchor=anchor)
    assert (result.problem, result.index, result.participant_id) == ("altered", 6, "p-forged")


def test_records_appended_after_the_anchor_are_fine(session: Path) -> None:
    anchor = (3, str(entry(lines(session)[2])["hash"]))
    assert verify(ledger_of(session), anchor=anchor).message() == "ok: 7 records"
    assert verify(ledger_of(session), anchor=(0, GENESIS)).ok


# --- a crash mid-write -------------------------------------------------------------------------------


def test_a_truncated_last_line_is_an_incomplete_last_entry(session: Path) -> None:
    data = ledger_of(session).read_bytes()
    ledger_of(session).write_bytes(data[:-40])
    result = verify(ledger_of(session))
    assert (result.problem, result.count, result.line) == ("incomplete", 6, 7)
    assert result.message() == "incomplete last entry (line 7, after 6 intact records)"


def test_a_ledger_that_is_not_intact_is_not_appended_to(session: Path) -> None:
    data = ledger_of(session).read_bytes()
    ledger_of(session).write_bytes(data[:-40])
    with pytest.raises(LedgerError) as info:
        Ledger(ledger_of(session))
    assert info.value.result.problem == "incomplete"
    assert ledger_of(session).read_bytes() == data[:-40]
    write(session, lines(session)[:3] + lines(session)[4:])
    with pytest.raises(LedgerError, match="record 3 was removed"):
        Ledger(ledger_of(session))


def test_truncate_incomplete_drops_the_partial_entry_and_the_chain_goes_on(session: Path) -> None:
    data = ledger_of(session).read_bytes()
    ledger_of(session).write_bytes(data[:-40])
    last_line = len(lines(session)[-1].encode())
    assert truncate_incomplete(ledger_of(session)) == last_line
    assert verify(ledger_of(session)).message() == "ok: 6 records"
    assert truncate_incomplete(ledger_of(session)) == 0
    Ledger(ledger_of(session)).append(record(6))
    assert verify(ledger_of(session)).message() == "ok: 7 records"


def test_an_entry_missing_only_its_newline_is_kept(session: Path) -> None:
    data = ledger_of(session).read_bytes()
    ledger_of(session).write_bytes(data[:-1])
    assert verify(ledger_of(session)).problem == "incomplete"
    assert truncate_incomplete(ledger_of(session)) == 0
    assert ledger_of(session).read_bytes() == data
    assert verify(ledger_of(session)).message() == "ok: 7 records"


def test_a_first_write_cut_short_leaves_an_empty_chain(tmp_path: Path) -> None:
    path = tmp_path / "consent.jsonl"
    Ledger(path).append(record(0))
    path.write_bytes(path.read_bytes()[:25])
    assert verify(path).message() == "incomplete last entry (line 1, after 0 intact records)"
    truncate_incomplete(path)
    assert path.read_bytes() == b"" and verify(path).ok


def test_an_incomplete_tail_after_a_broken_chain_reports_the_break_first(session: Path) -> None:
    content = lines(session)
    content[1] = content[1].replace('"join_prompt"', '"settings"')
    ledger_of(session).write_text("".join(content)[:-30], encoding="utf-8")
    assert verify(ledger_of(session)).message().startswith("record 1 was altered")
    assert truncate_incomplete(ledger_of(session)) > 0  # the partial line goes; the altered one stays
    assert verify(ledger_of(session)).message().startswith("record 1 was altered")


# --- python -m recording verify ----------------------------------------------------------------------


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "recording", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_cli_an_intact_ledger_exits_0(session: Path, node_key: NodeKey) -> None:
    run = cli("verify", session)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"ok: 7 records, chain intact and head signed by key {node_key.id} ")
    assert run.stdout.endswith("sealed at the stop: no record up to #6 was altered, removed or inserted\n")


def test_cli_a_session_id_is_found_under_root(session: Path) -> None:
    root = session.parents[1]
    for target in ("rec-1", "cardio/rec-1"):
        run = cli("verify", target, "--root", root)
        assert (run.returncode, run.stdout[:14]) == (0, "ok: 7 records,"), run.stdout + run.stderr


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("altered", "record 4 was altered (participant p-1a2b at 2026-11-26T14:03:05Z)"),
        ("removed", "record 4 was removed"),
        ("inserted", "record 4 was inserted (participant p-forged at 2026-11-26T14:04:40Z)"),
        ("truncated", "incomplete last entry (line 7, after 6 intact records)"),
    ],
)
def test_cli_a_damaged_ledger_exits_1_and_names_the_record(session: Path, damage: str, expected: str) -> None:
    content = lines(session)
    if damage == "altered":
        content[4] = content[4].replace('"granted"', '"Granted"')
    elif damage == "removed":
        del content[4]
    elif damage == "inserted":
        content.insert(4, forged(4, str(entry(content[3])["hash"])))
    else:
        content[-1] = content[-1][:-30]
    write(session, content)
    run = cli("verify", session)
    assert (run.returncode, run.stdout) == (1, expected + "\n"), run.stderr
    assert "consent.jsonl, line" in run.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("verify", "no-such-session"), "no session directory no-such-session"),
        (("verify",), "the following arguments are required: SESSION"),
        ((), "the following arguments are required: COMMAND"),
        (("check", "x"), "invalid choice: 'check'"),
    ],
)
def test_cli_usage_errors_exit_2_with_a_clear_message(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    run = cli(*args, *(["--root", tmp_path] if args[:1] == ("verify",) and len(args) > 1 else []))
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert run.stdout == ""


def test_cli_checks_the_anchor_the_manifest_notes(session: Path) -> None:
    head = str(entry(lines(session)[-1])["hash"])
    (session / "manifest.json").write_text(
        json.dumps({"ledger": "consent.jsonl", "ledger_count": 7, "ledger_head": head})
    )
    assert cli("verify", session).returncode == 0  # the signed heads are in consent.heads.jsonl too
    write(session, lines(session)[:-1])
    run = cli("verify", session)
    assert run.returncode == 1
    assert run.stdout.startswith("record 6 was removed: the head signed at "), run.stdout
    (session / "manifest.json").write_text("{not json")
    assert cli("verify", session).stdout.startswith("record 6 was removed")  # the heads still say so


def test_cli_an_unsigned_session_is_checked_for_internal_consistency_only(tmp_path: Path) -> None:
    directory = tmp_path / "recordings" / "cardio" / "rec-1"
    directory.mkdir(parents=True)
    ledger = Ledger(directory / "consent.jsonl")
    for n in range(3):
        ledger.append(record(n))
    (directory / "manifest.json").write_text(json.dumps({"ledger_count": 3, "ledger_head": ledger.head}))
    run = cli("verify", directory)
    assert (run.returncode, run.stdout) == (
        1,
        "unsigned: only internal consistency can be checked: ok: 3 records\n",
    )
    write(directory, lines(directory)[:-1])
    run = cli("verify", directory)
    assert (run.returncode, run.stdout) == (
        1,
        "unsigned: only internal consistency can be checked: record 2 was removed\n",
    )


def test_cli_a_session_without_a_ledger_is_a_usage_error(tmp_path: Path) -> None:
    run = cli("verify", tmp_path)
    assert run.returncode == 2 and "has no consent ledger (consent.jsonl)" in run.stderr


def test_cli_an_ambiguous_session_id_is_a_usage_error(session: Path) -> None:
    root = session.parents[1]
    (root / "other-stage" / "rec-1").mkdir(parents=True)
    run = cli("verify", "rec-1", "--root", root)
    assert run.returncode == 2 and "ambiguous" in run.stderr
