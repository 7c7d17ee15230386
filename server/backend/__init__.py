"""What the nodes of one deployment share: one interface (``Backend``), two implementations.

``MemoryBackend`` is the embedded default: in this process, nothing to set up, one node. Several
instances may share one ``MemoryStore`` (nodes simulated in one process, for tests).
``RedisBackend(url)`` is for several nodes on one Redis (redis.asyncio with hiredis, values in msgpack).
Both have the same semantics and run the same tests (tests/backend/). The backend stores bytes and
small dicts; it knows nothing of ``rooms``: the event log's payload is the event in msgpack, made and
read by the caller.

Stage registry (a lease)
    ``claim`` is ``SET NX PX``: one node hosts a stage's media until its lease's TTL runs out, unless
    it ``renew``s it first. Each claim gets a random token; ``renew`` and ``release`` are
    compare-and-act scripts on that token, so a node whose lease expired (and was claimed by another)
    gets False and can never extend or delete the new holder's lease. ``append(..., lease=...)`` is
    fenced the same way, in one script with the XADD: a node that lost its lease cannot write even one
    more event. ``owner`` says who holds a stage and its URL (to redirect or proxy a client).

Stage state (a snapshot, fenced by the lease)
    ``save_state(stage_id, payload, lease=...)`` replaces the stage's snapshot (bytes made by the
    caller) only while that lease holds the stage: the same compare as the fenced append, in one
    script with the SET, so a node that lost its lease cannot overwrite its successor's snapshot
    (LeaseLost, nothing written). No TTL: the snapshot outlives its writer's lease, so the next owner
    ``load_state``s it and replays the log after it.

Clubs (a document per club, optimistic concurrency)
    ``load_club`` gives the club's payload (bytes made by the caller: server/clubs.py) and its version;
    ``save_club(club_id, payload, expected_version=...)`` writes only if the stored version is still
    the expected one (None: the club must not exist), in one compare-and-set script, and returns the
    new version (1, 2, ...); otherwise ``Conflict`` and nothing is written: the caller loads, applies
    its change again and saves again. A retried save whose first attempt landed (the stored version is
    the one it made, with its payload) returns that version instead of a Conflict. ``list_clubs``
    reads a set that each successful save adds to, after the script (another slot): a save whose
    SADD was lost is listed again by the club's next save.

Presence (per-node heartbeat, not per-entry TTL)
    Each node calls ``heartbeat(node_id, ttl_ms)`` periodically: one key per node with a TTL, one
    write per beat however many people the node serves. Entries (participant -> node, info) carry no
    TTL; ``presence`` returns only those whose node is alive, and deletes the others as it goes
    (compare-and-delete, so an entry rewritten meanwhile stays). ``heartbeat`` returns False when the
    node was not alive (first beat, or it lapsed, e.g. during a Redis outage): its entries may be gone,
    so the node joins its people again (joins are idempotent). ``presence_leave`` removes an entry only
    if it still names that node: a person who moved to another node is not removed by the old one.
    ``alive_nodes(ids)`` says which nodes' heartbeats are alive, in one round trip (a pipeline of
    EXISTS: each node key has its own hash tag, so no MGET across slots).
    ``heartbeat(node_id, ttl_ms, url)`` also registers the node's public URL (a hash ``ms:nodes``);
    ``node_urls()`` reads it back for the nodes alive now (the hash, then one pipeline of EXISTS) and
    drops the entries of dead ones: where a client whose node died may go (``joined.nodes``).

Node messaging (Pub/Sub: at most once, in order per sender)
    ``send(node_id, payload)`` is a PUBLISH to the node's channel; ``open_inbox(node_id)`` SUBSCRIBEs
    on a dedicated connection and returns once Redis confirmed it, so anything sent after that is
    received. Messages from one sender arrive in the order its sends returned. Nothing is stored: a
    message to a node with no open inbox is dropped. Both go over a client that never retries: a
    retried PUBLISH could deliver twice, and a connection that redis-py silently re-subscribed would
    hide a gap. So every loss shows: after yielding what it had received, an inbox raises
    BackendUnavailable when its connection drops (CLIENT KILL or a dead Redis: at once; a silent peer:
    after ``2 * inbox_ping_s``, 2 s by default, because it PINGs after ``inbox_ping_s`` of silence) or
    when more than ``inbox_limit`` (10,000) messages wait unread, as Redis drops a subscriber past its
    output buffer limit. The node then resynchronises by other means and opens a new inbox. Closing
    the inbox or the backend ends iteration (StopAsyncIteration) and drops what was not read. Memory:
    ``send`` delivers synchronously to the inboxes open on the same ``MemoryStore``.

Event log (Redis Streams)
    One stream per stage; the stage owner assigns ``seq`` and the entry id is ``SEQ-0``, so Redis
    itself refuses a ``seq`` that is not above the last (``OutOfOrder``), and an XREAD from ``SEQ-0``
    resumes exactly after ``seq``. Appending an entry that is already there, identically, is a no-op
    (a retry after a lost reply: no duplicates). ``subscribe`` loops on ``XREAD BLOCK`` from the last
    id it yielded; when the connection drops (CLIENT KILL, Redis restart) it retries with backoff
    (50 ms doubling to ``reconnect_max_s``) from that id, so nothing is skipped or repeated. Trimming:
    ``XADD MAXLEN ~ max_log_entries`` (default 100,000): at least that many entries stay, about that
    many at most (memory: within 1%). A consumer behind the trimmed part sees ``seq`` jump.

Rate limits (sliding-window log, atomic)
    ``hit(key, window_s, limit)``: at most ``limit`` allowed hits in any ``window_s``, the same rule as
    ``rooms.comments``. In Redis, a sorted set per key and one Lua script (prune, count, add), on
    Redis's own clock so nodes with skewed clocks agree; refused hits are not counted; ``retry_after``
    is when the oldest counted hit leaves the window. Memory: a deque per key.

Recording evidence
    ``put_ledger_head(stage, session, payload)`` keeps the latest signed head of a recording session's
    consent ledger (``ms:{stage:ID}:ledger-heads``, a hash by session; recording/signing.py), written by
    the stage's host: a copy of the evidence outside the node's disk (docs/recording.md, threat model).

People ledger (issue 15: one order for all nodes)
    ``people_append(index, payload)`` adds entry ``index`` only if the log holds exactly ``index``
    entries (a Lua script on a list, ``ms:{people}:ledger``): of two nodes appending at once, one
    wins and the other re-reads, re-chains and tries again (server/host/people.py). An identical entry
    already at ``index`` is a retry that landed (True). ``people_read``/``people_count`` read it.
    People's keys live beside it in Redis (``server/backend/redis_keys.py``), not in this interface.

Bans and revocations
    ``ban``/``is_banned`` per stage; ``revoke``/``is_revoked`` per identity, for every stage. Kept until
    deleted (no TTL yet: see issue 6 for token lifetimes).

Errors
    ``OutOfOrder``, ``LeaseLost``, ``Conflict``, ``BackendUnavailable`` (the store cannot be reached:
    the caller buffers and retries; never a redis-py exception type), ``BackendClosed``; all
    ``BackendError``.
    Every operation but ``send`` is idempotent, which is why the Redis client may retry once after a
    dropped connection: a claim, hit or heartbeat carries a random token that recognises its own first
    attempt. ``send`` and inboxes are never retried (at most once, above).

Redis keys (a stage's keys share the hash tag ``{stage:ID}``: one cluster slot; see ``keys.py``)
    ms:{stage:ID}:owner       string  msgpack [node_id, node_url, token], PX = lease TTL
    ms:{stage:ID}:presence    hash    participant_id -> msgpack [node_id, info]
    ms:{stage:ID}:log         stream  id SEQ-0, field ``e`` = the event (msgpack), MAXLEN ~ N
    ms:{stage:ID}:state       string  the stage's snapshot (bytes made by the caller), no TTL
    ms:{stage:ID}:bans        hash    identity -> msgpack {reason, at}
    ms:{node:ID}:alive        string  random beat token, PX = heartbeat TTL
    ms:{node:ID}:inbox        channel Pub/Sub channel (not a key): messages to the node
    ms:{rate:KEY}             zset    one member per allowed hit, score = Redis time in µs, PX = window
    ms:{identity:ID}:revoked  string  msgpack {at}
    ms:{club:ID}              hash    v = the version, data = the club (bytes made by the caller)
    ms:clubs                  set     every stored club's id
    ms:{people}:ledger        list    the people ledger's entries (JSON lines), compare-and-append only
    ms:{person:ID}:key        hash    data (the key, JSON), id, at: a person's live key (redis_keys.py)
    ms:{person:ID}:destroyed  list    the person's key tombstones (JSON), oldest first
    ms:people                 set     every identity with a key or a tombstone
"""

from server.backend.base import (
    DEFAULT_INBOX_LIMIT,
    DEFAULT_MAX_LOG_ENTRIES,
    Backend,
    BackendClosed,
    BackendError,
    BackendUnavailable,
    Conflict,
    Inbox,
    Lease,
    LeaseLost,
    OutOfOrder,
    Owner,
)
from server.backend.memory import MemoryBackend, MemoryStore
from server.backend.redis import RedisBackend

__all__ = [
    "DEFAULT_INBOX_LIMIT",
    "DEFAULT_MAX_LOG_ENTRIES",
    "Backend",
    "BackendClosed",
    "BackendError",
    "BackendUnavailable",
    "Conflict",
    "Inbox",
    "Lease",
    "LeaseLost",
    "MemoryBackend",
    "MemoryStore",
    "OutOfOrder",
    "Owner",
    "RedisBackend",
]
