"""What the signed heads prove: a record edited with every hash after it (and the manifest) recomputed
is named, a rewritten manifest or signature is caught, records cut off with their heads show against a
head published elsewhere, and ``python -m recording verify`` says which key it trusted or why it could
not check."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from recording.evidence import TrustedKey, verify_session
from recording.ledger import GENESIS, Entry, Ledger, entry_hash
from recording.signing import (
    HEADS_FILENAME,
    NodeKey,
    SignedHead,
    default_key_path,
    key_id,
    load_public_key,
    read_heads,
)
from rooms.consent import ConsentRecord
from tests.recording.signed import seal, signed_session

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 26, 14, 3, 1, tzinfo=UTC).timestamp()


def record(n: int) -> ConsentRecord:
    return ConsentRecord(
        record_id=f"cr-{n}",
        stage_id="cardio",
        session_id="rec-1",
        participant_id=f"p-{n:04x}",
        identity=f"id-{n}",
        name=f"Dr {n}",
        scopes=("comments", "media") if n % 3 else (),
        policy_version="2026-11",
        decision="granted" if n % 3 else "declined",
        at=T0 + n,
        method="join_prompt",
    )


@pytest.fixture
def node_key(tmp_path: Path) -> NodeKey:
    return NodeKey.load_or_create(default_key_path(tmp_path / "recordings"))


@pytest.fixture
def session(tmp_path: Path, node_key: NodeKey) -> Path:
    return signed_session(tmp_path / "recordings", node_key, [record(n) for n in range(7)])


def trusted(key: NodeKey) -> TrustedKey:
    return TrustedKey(key.public, "test key")


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recording", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=60,
        check=False,
    )


def entries(session: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (session / "consent.jsonl").read_text().splitlines()]


def rewrite_chain(session: Path, index: int, **changes: object) -> None:
    """What someone with write access but no key does: edit record ``index``, recompute its hash and
    every one after it, and the manifest's ``ledger_count``/``ledger_head``: the chain is consistent."""
    old = entries(session)
    lines, prev = [], GENESIS
    for n, e in enumerate(old):
        data = dict(e["record"])  # type: ignore[arg-type]
        if n == index:
            data.update(changes)
        entry = Entry(n, prev, data, entry_hash(prev, data, n))
        lines.append(entry.line() + "\n")
        prev = entry.hash
    (session / "consent.jsonl").write_text("".join(lines))
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["ledger_count"], manifest["ledger_head"] = len(lines), prev
    (session / "manifest.json").write_text(json.dumps(manifest))


# --- an intact session ------------------------------------------------------------------------------


def test_an_intact_signed_ledger_verifies_and_names_the_key(session: Path, node_key: NodeKey) -> None:
    result = verify_session(session, trusted(node_key))
    assert result.ok, result.message
    assert result.message.startswith(f"ok: 7 records, chain intact and head signed by key {node_key.id} ")
    assert "sealed at the stop: no record up to #6 was altered, removed or inserted" in result.message
    heads, _ = read_heads(session / HEADS_FILENAME)
    assert [h.count for _, h in heads if h is not None] == [0, 1, 2, 3, 4, 5, 6, 7, 7]
    manifest = json.loads((session / "manifest.json").read_text())
    assert manifest["ledger_key"]["key_id"] == node_key.id == key_id(node_key.public)
    assert key_id(load_public_key(manifest["ledger_key"]["public_key"])) == node_key.id


def test_the_key_file_is_private_and_its_public_half_beside_it(tmp_path: Path, node_key: NodeKey) -> None:
    path = default_key_path(tmp_path / "recordings")
    assert path == tmp_path / "keys" / "ledger-ed25519.key" and node_key.path == path
    assert path.stat().st_mode & 0o777 == 0o600
    assert key_id(load_public_key(str(path.with_name(path.name + ".pub")))) == node_key.id
    assert NodeKey.load_or_create(path).id == node_key.id  # read again, not made anew
    published = node_key.publish(tmp_path / "recordings")
    assert published.parent == tmp_path / "recordings" / ".keys"
    assert key_id(load_public_key(str(published))) == node_key.id


# --- what someone with write access to the session, but not the key, can try ------------------------


def test_a_record_edited_with_its_chain_and_manifest_head_recomputed_is_named(
    session: Path, node_key: NodeKey
) -> None:
    rewrite_chain(session, 3, decision="granted", scopes=["comments", "media"])
    result = verify_session(session, trusted(node_key))
    assert not result.ok
    assert result.message.startswith(
        "record 3 was altered after it was signed (participant p-0003 at 2026-11-26T14:03:04Z): its chain "
        "no longer matches the head signed at "
    ), result.message
    assert result.message.endswith(f"for 4 records (key {node_key.id})")
    run = cli("verify", session)
    assert run.returncode == 1 and run.stdout == result.message + "\n", run.stdout + run.stderr
    assert "consent.jsonl, line 4" in run.stderr


def test_the_last_record_edited_and_recomputed_is_named(session: Path, node_key: NodeKey) -> None:
    rewrite_chain(session, 6, decision="withdrawn")
    assert verify_session(session, trusted(node_key)).message.startswith("record 6 was altered after it")


def test_a_rewritten_manifest_head_is_caught(session: Path, node_key: NodeKey) -> None:
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["ledger_head"] = entries(session)[4]["hash"]  # a real hash, of the wrong record
    (session / "manifest.json").write_text(json.dumps(manifest))
    result = verify_session(session, trusted(node_key))
    assert (result.ok, result.where) == (False, str(session / "manifest.json"))
    assert result.message.startswith("the manifest was altered: its ledger_count/ledger_head do not match")


def test_a_rewritten_signature_is_invalid(session: Path, node_key: NodeKey) -> None:
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["ledger_signature"]["count"] = 6  # the head of 6 records, said to be signed
    manifest["ledger_signature"]["head"] = entries(session)[5]["hash"]
    (session / "manifest.json").write_text(json.dumps(manifest))
    result = verify_session(session, trusted(node_key))
    assert (result.ok, result.where) == (False, str(session / "manifest.json"))
    assert result.message == f"head signature invalid: not made by key {node_key.id} over this head"


def test_heads_signed_with_a_key_of_ones_own_are_refused(
    tmp_path: Path, session: Path, node_key: NodeKey
) -> None:
    forger = NodeKey.load_or_create(tmp_path / "forger.key")
    rewrite_chain(session, 2, name="Dr Nobody")
    (session / HEADS_FILENAME).unlink()
    seal(session, forger, Ledger(session / "consent.jsonl"), final=True)  # heads and manifest re-signed
    result = verify_session(session, trusted(node_key))
    assert not result.ok
    assert result.message == f"head signed by key {forger.id}, not by {node_key.id} (test key)"
    assert cli("verify", session).returncode == 1  # the node's own key is the default


def test_a_head_moved_from_another_session_is_refused(
    tmp_path: Path, session: Path, node_key: NodeKey
) -> None:
    other = signed_session(
        tmp_path / "recordings", node_key, [record(n) for n in range(7)], session_id="rec-2"
    )
    # Same records, same hashes: only the session named in the signed head differs.
    (session / HEADS_FILENAME).write_bytes((other / HEADS_FILENAME).read_bytes())
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["ledger_signature"] = json.loads((other / "manifest.json").read_text())["ledger_signature"]
    (session / "manifest.json").write_text(json.dumps(manifest))
    result = verify_session(session, trusted(node_key))
    assert result.message == "the signed head is of session cardio/rec-2, not this one"


def test_records_appended_after_the_last_signed_head_are_not_vouched_for(
    session: Path, node_key: NodeKey
) -> None:
    Ledger(session / "consent.jsonl").append(record(7))
    result = verify_session(session, trusted(node_key))
    assert not result.ok and result.message.startswith("record 7 is not covered by a signed head")


def test_records_cut_off_with_their_heads_show_only_against_a_published_head(
    tmp_path: Path, node_key: NodeKey
) -> None:
    """The limit of local evidence, and what the head in the shared log adds."""
    root = tmp_path / "recordings"
    session = signed_session(root, node_key, [record(n) for n in range(7)])
    published = SignedHead.from_dict(json.loads((session / "manifest.json").read_text())["ledger_signature"])
    # Cut records 5 and 6, their heads and the final one; the manifest gets the last head left.
    (session / "consent.jsonl").write_text(
        "".join(e + "\n" for e in (session / "consent.jsonl").read_text().splitlines()[:5])
    )
    heads = (session / HEADS_FILENAME).read_text().splitlines()[:6]
    (session / HEADS_FILENAME).write_text("".join(h + "\n" for h in heads))
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["ledger_signature"] = json.loads(heads[-1])
    manifest["ledger_count"], manifest["ledger_head"] = 5, json.loads(heads[-1])["head"]
    (session / "manifest.json").write_text(json.dumps(manifest))

    alone = verify_session(session, trusted(node_key))
    assert alone.ok and "ok: 5 records" in alone.message
    assert "not sealed: the session did not stop cleanly" in alone.message  # the only trace left
    result = verify_session(session, trusted(node_key), [published])
    assert not result.ok and result.message.startswith("records 5 to 6 were removed: the head signed at")
    run = cli("verify", session, "--head", published.line())
    assert run.returncode == 1 and run.stdout.startswith("records 5 to 6 were removed"), run.stdout


# --- keys ------------------------------------------------------------------------------------------


def test_without_a_key_verify_says_what_it_cannot_check(
    tmp_path: Path, session: Path, node_key: NodeKey
) -> None:
    key_file = default_key_path(tmp_path / "recordings")
    key_file.unlink()
    key_file.with_name(key_file.name + ".pub").unlink()
    run = cli("verify", session)
    assert run.returncode == 1
    assert run.stdout == (
        f"the ledger head is signed by key {node_key.id}, but there is no key to check it with "
        f"(no --public-key given and no node key at {key_file}): pass --public-key FILE\n"
    )
    published = node_key.publish(tmp_path / "recordings")  # what the node wrote beside the recordings
    run = cli("verify", session, "--public-key", published)
    assert run.returncode == 0 and f"signed by key {node_key.id} (--public-key {published})" in run.stdout
    raw = json.loads((session / "manifest.json").read_text())["ledger_key"]["public_key"]
    assert cli("verify", session, "--public-key", raw).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--public-key", "no-such-file"),
            "is neither a key file nor the base64 of a raw Ed25519 public key",
        ),
        (("--public-key", base64.b64encode(b"short").decode()), "neither a key file nor the base64"),
        (("--signing-key", "/nonexistent/key"), "no signing key at /nonexistent/key"),
        (("--head", "{not json"), "--head: not a signed head"),
        (("--head", '{"count": 1}'), "--head: not a signed head"),
    ],
)
def test_bad_key_arguments_are_usage_errors(session: Path, args: tuple[str, ...], message: str) -> None:
    run = cli("verify", session, *args)
    assert run.returncode == 2 and message in run.stderr, run.stderr


def test_a_key_file_that_is_not_a_key_is_refused_clearly(tmp_path: Path, session: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    run = cli("verify", session, "--public-key", bad)
    assert run.returncode == 2 and f"{bad} is not a PEM public key" in run.stderr


# --- a crash between the ledger and its head --------------------------------------------------------


def test_repair_drops_a_signed_head_cut_short(session: Path) -> None:
    heads = session / HEADS_FILENAME
    heads.write_bytes(heads.read_bytes() + b'{"stage_id":"cardio","sess')
    assert read_heads(heads)[1] is True
    run = cli("repair", session)
    assert run.returncode == 0 and "signed heads: dropped an incomplete last line (26 bytes)" in run.stdout
    assert read_heads(heads)[1] is False and cli("verify", session).returncode == 0


def test_signing_covers_every_field(node_key: NodeKey) -> None:
    head = node_key.sign(SignedHead("cardio", "rec-1", 3, "ab" * 32, T0, final=False, key_id=node_key.id))
    assert head.valid(node_key.public)
    for name, value in [
        ("stage_id", "other"),
        ("session_id", "rec-2"),
        ("count", 4),
        ("head", "cd" * 32),
        ("signed_at", T0 + 1),
        ("final", True),
    ]:
        changed = SignedHead(**{**head.to_dict(), name: value})
        assert not changed.valid(node_key.public), name
    assert SignedHead.from_dict(json.loads(head.line())) == head
    assert msgspec.json.decode(head.line())["signature"] == head.signature
