"""Redis key names: one function per key, so the layout is written down once (package docstring).

A stage's keys share the hash tag ``{stage:ID}``: one cluster slot, so a script may touch several.
"""

from __future__ import annotations

PREFIX = "ms"


def owner(stage_id: str) -> str:
    """String, msgpack ``[node_id, node_url, token]``, PX = the lease's TTL."""
    return f"{PREFIX}:{{stage:{stage_id}}}:owner"


def presence(stage_id: str) -> str:
    """Hash: participant id -> msgpack ``[node_id, info]``."""
    return f"{PREFIX}:{{stage:{stage_id}}}:presence"


def log(stage_id: str) -> str:
    """Stream: entry id ``SEQ-0``, one field ``e`` = the event in msgpack; MAXLEN ~ max_log_entries."""
    return f"{PREFIX}:{{stage:{stage_id}}}:log"


def state(stage_id: str) -> str:
    """String: the stage's latest snapshot (bytes made by the caller), written under the lease; no TTL."""
    return f"{PREFIX}:{{stage:{stage_id}}}:state"


def bans(stage_id: str) -> str:
    """Hash: identity -> msgpack ``{reason, at}``."""
    return f"{PREFIX}:{{stage:{stage_id}}}:bans"


def ledger_heads(stage_id: str) -> str:
    """Hash: recording session id -> the JSON of its consent ledger's last signed head (written by the
    stage's host after each ledger append and at the stop; no TTL: evidence outlives the stage)."""
    return f"{PREFIX}:{{stage:{stage_id}}}:ledger-heads"


def node(node_id: str) -> str:
    """String, a random token per beat, PX = the heartbeat TTL: the node's presence counts while it exists."""
    return f"{PREFIX}:{{node:{node_id}}}:alive"


def node_urls() -> str:
    """Hash: node id -> its public URL, written at each beat; an entry counts while the node's ``node``
    key lives (its own slot: no script touches it with another key)."""
    return f"{PREFIX}:nodes"


def inbox(node_id: str) -> str:
    """Pub/Sub channel (not a key): messages to the node, read by its open inboxes."""
    return f"{PREFIX}:{{node:{node_id}}}:inbox"


def rate(key: str) -> str:
    """Sorted set: one member per allowed hit, scored by Redis's clock in µs; PX = the window."""
    return f"{PREFIX}:{{rate:{key}}}"


def revoked(identity: str) -> str:
    """String, msgpack ``{at}``: the identity's credentials are refused."""
    return f"{PREFIX}:{{identity:{identity}}}:revoked"


def club(club_id: str) -> str:
    """Hash ``{v, data}``: the club's version (1, 2, ...) and its payload (bytes made by the caller),
    replaced together by a compare-and-set script; no TTL."""
    return f"{PREFIX}:{{club:{club_id}}}"


def clubs() -> str:
    """Set of every stored club's id (its own slot: added to after each save, never in the script)."""
    return f"{PREFIX}:clubs"


def person_key(identity: str) -> str:
    """Hash ``{id, k, at, identity}``: the person's live data-encryption key (recording/keys.py), made
    by a script only if absent and not destroyed; deleted when destroyed. No TTL."""
    return f"{PREFIX}:{{person:{identity}}}:key"


def person_tombstones(identity: str) -> str:
    """List of JSON tombstones, oldest first: the person's destroyed keys (same slot as their key)."""
    return f"{PREFIX}:{{person:{identity}}}:destroyed"


def people() -> str:
    """Set of every identity with a key or a tombstone (its own slot: added to after the script)."""
    return f"{PREFIX}:people"


def people_ledger() -> str:
    """List: the people ledger's entries (JSON lines, recording/people.py), index = position; appended
    only by a compare-and-append script, so all nodes agree on one order."""
    return f"{PREFIX}:{{people}}:ledger"


def person_profile(identity: str) -> str:
    """Hash field -> value: the person's corrected profile (recording/profiles.py), plus
    ``updated_at``; HSET merges a correction into it. Deleted by an erasure. No TTL."""
    return f"{PREFIX}:{{person:{identity}}}:profile"


def profiles() -> str:
    """Set of every identity with a corrected profile (its own slot: added to after the HSET)."""
    return f"{PREFIX}:profiles"
