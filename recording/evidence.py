"""What a session's consent ledger proves: its chain checked against the heads the node signed.

:func:`verify_session` is ``python -m recording verify``: it says exactly what can be shown, and nothing
more (docs/recording.md, "Threat model"):

- the chain is broken: the first record altered, removed or inserted (recording/ledger.py);
- a signed head does not verify with the trusted key: ``head signature invalid``;
- the chain holds but no longer matches a signed head (a record edited and every hash after it
  recomputed): the first record whose hash differs from what was signed, or the records removed;
- no signed head at all: ``unsigned``, only the chain's internal consistency is checked;
- all good: how many records, signed by which key, when, and whether the head was sealed at the stop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recording.ledger import FILENAME, GENESIS, VerifyResult, read_entries, verify
from recording.signing import HEADS_FILENAME, SignedHead, key_id, read_heads


@dataclass(frozen=True, slots=True)
class Evidence:
    """The verdict: ``ok`` (exit 0) or not, a one-line ``message``, and ``where`` it shows (if known)."""

    ok: bool
    message: str
    where: str | None = None


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """The key heads are checked with, and where it came from (said in the verdict)."""

    public: Ed25519PublicKey | None
    source: str  # "--public-key FILE", "this node's key (PATH)", or why there is none


def verify_session(
    session: Path,
    key: TrustedKey,
    published: list[SignedHead] | None = None,
    *,
    ledger_name: str = FILENAME,
    heads_name: str = HEADS_FILENAME,
    signed_as: tuple[str, str] | None = None,
) -> Evidence:
    """Check ``session``'s ledger, its signed heads (and ``published`` ones, e.g. from the shared
    log) with ``key``. Raises ``OSError`` when the ledger cannot be read.

    Another ledger of the same kind (the people ledger, recording/people.py) is checked by naming its
    files and the ``(stage_id, session_id)`` its heads are signed as."""
    ledger = session / ledger_name
    manifest = _manifest(session / "manifest.json")
    heads: list[tuple[str, SignedHead]] = []
    lines, _ = read_heads(session / heads_name)
    for number, head in lines:
        if head is None:
            return Evidence(False, "a signed head is unreadable", f"{session / heads_name}, line {number}")
        heads.append((f"{session / heads_name}, line {number}", head))
    if isinstance(manifest.get("ledger_signature"), dict):
        try:
            heads.append((str(session / "manifest.json"), SignedHead.from_dict(manifest["ledger_signature"])))
        except ValueError:
            where = str(session / "manifest.json")
            return Evidence(False, "the manifest's ledger_signature is not a signed head", where)
    heads += [("the published head (--head)", head) for head in published or []]

    if not heads:
        chain = verify(ledger, anchor=_anchor(manifest))
        return Evidence(
            False,
            f"unsigned: only internal consistency can be checked: {chain.message()}",
            None if chain.ok else f"{ledger}, line {chain.line}",
        )
    chain = verify(ledger)
    if key.public is None:
        return Evidence(
            False,
            f"the ledger head is signed by key {heads[-1][1].key_id}, but there is no key to check it "
            f"with ({key.source}): pass --public-key FILE",
        )
    trusted = key_id(key.public)
    stage_id = str(manifest.get("stage_id") or session.parent.name)
    session_id = str(manifest.get("session_id") or session.name)
    if signed_as is not None:
        stage_id, session_id = signed_as
    for where, head in heads:
        if head.key_id != trusted:
            return Evidence(
                False, f"head signed by key {head.key_id}, not by {trusted} ({key.source})", where
            )
        if not head.valid(key.public):
            return Evidence(False, f"head signature invalid: not made by key {trusted} over this head", where)
        if (head.stage_id, head.session_id) != (stage_id, session_id):
            return Evidence(
                False, f"the signed head is of session {head.stage_id}/{head.session_id}, not this one", where
            )
    if not chain.ok:  # the chain itself names the record (the signatures were checked above)
        return Evidence(False, chain.message(), f"{ledger}, line {chain.line}")
    return _against_heads(ledger, chain, heads, manifest, trusted, key.source)


def _against_heads(
    ledger: Path,
    chain: VerifyResult,
    heads: list[tuple[str, SignedHead]],
    manifest: dict[str, Any],
    trusted: str,
    source: str,
) -> Evidence:
    """The intact chain compared with every signed head, in order of length."""
    entries = read_entries(ledger)
    hashes = [GENESIS] + [e.hash for e in entries]  # hashes[n]: the head after n records
    matched = 0
    for where, head in sorted(heads, key=lambda item: item[1].count):
        signed = f"the head signed at {_iso(head.signed_at)} for {head.count} records"
        if head.count > chain.count:
            first, end = chain.count, head.count - 1
            what = f"record {first} was" if first == end else f"records {first} to {end} were"
            return Evidence(False, f"{what} removed: {signed} has them", where)
        if hashes[head.count] != head.head:
            if matched == head.count - 1:
                record = entries[matched].record
                who = _who(record)
                return Evidence(
                    False,
                    f"record {matched} was altered after it was signed{who}: its chain no longer "
                    f"matches {signed} (key {trusted})",
                    f"{ledger}, line {matched + 1}",
                )
            return Evidence(
                False,
                f"a record among {matched} to {head.count - 1} was altered: the chain no longer matches "
                f"{signed} (key {trusted})",
                where,
            )
        matched = head.count
    count, anchored = manifest.get("ledger_count"), manifest.get("ledger_head")
    if (
        type(count) is int
        and isinstance(anchored, str)
        and not (0 <= count < len(hashes) and hashes[count] == anchored)
    ):
        return Evidence(
            False,
            "the manifest was altered: its ledger_count/ledger_head do not match the ledger, "
            "which matches its signed heads",
            str(ledger.parent / "manifest.json"),
        )
    last = max((head for _, head in heads), key=lambda h: (h.count, h.final, h.signed_at))
    if chain.count > last.count:
        first, end = last.count, chain.count - 1
        what = f"record {first} is" if first == end else f"records {first} to {end} are"
        return Evidence(
            False,
            f"{what} not covered by a signed head (the last, at {_iso(last.signed_at)}, has "
            f"{last.count}): they can be checked for internal consistency only",
            f"{ledger}, line {first + 1}",
        )
    sealed = "sealed at the stop" if last.final else "not sealed: the session did not stop cleanly"
    upto = f"no record up to #{chain.count - 1}" if chain.count else "no record"
    return Evidence(
        True,
        f"ok: {chain.count} record{'' if chain.count == 1 else 's'}, chain intact and head signed by key "
        f"{trusted} ({source}) at {_iso(last.signed_at)}, {sealed}: {upto} was altered, removed or "
        f"inserted{_deletions(entries)}",
    )


def _deletions(entries: list[Any]) -> str:
    """What the ledger says of the session's media being deleted (recording/retention.py), if it was."""
    said = []
    for entry in entries:
        record = entry.record
        if record.get("type") == "deletion":
            at = record.get("at")
            when = _iso(float(at)) if isinstance(at, int | float) else "?"
            said.append(
                f"; the session's media, timeline and exports were deleted at {when} (record {entry.index}: "
                f"{record.get('reason')}, by {record.get('by')})"
            )
    return "".join(said)


def _manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _anchor(manifest: dict[str, Any]) -> tuple[int, str] | None:
    """``(ledger_count, ledger_head)`` as the manifest notes them (unsigned: a consistency check)."""
    count, head = manifest.get("ledger_count"), manifest.get("ledger_head")
    if type(count) is int and isinstance(head, str):
        return count, head
    return None


def _who(record: dict[str, Any]) -> str:
    parts = []
    if isinstance(record.get("participant_id"), str):
        parts.append(f"participant {record['participant_id']}")
    at = record.get("at")
    if isinstance(at, int | float) and not isinstance(at, bool):
        parts.append(f"at {_iso(float(at))}")
    return f" ({' '.join(parts)})" if parts else ""


def _iso(at: float) -> str:
    try:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(at)
