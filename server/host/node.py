"""The node: the stages it hosts (``server.host.live.LiveStage``, one owner each), where the others
are (``server.routing``), tokens, revocations, clubs and webhooks."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media.messages import MediaMessage
from media.room import MediaRoom
from media.tasks import OwnedTasks
from media.workers import WorkerPool
from recording import retention
from recording.keys import FileKeyStore, KeyStore, PersonKey
from recording.profiles import FileProfileStore, ProfileStore
from recording.signing import NodeKey, SigningKeyError
from recording.tracks import manifest_key_ids
from recording.vault import KeyRing, load_ring
from rooms import durable
from rooms.clubs import ClubError
from rooms.errors import DomainError, StageExists, StageNotFound
from rooms.stage import Stage, StageSettings, StageState
from server import wire_out
from server.auth import Authenticator, Forbidden, parse_keys
from server.backend import BackendError, Lease, Owner, RedisBackend
from server.backend.redis_keys import RedisKeyStore
from server.backend.redis_profiles import RedisProfileStore
from server.closecodes import CloseCode
from server.config import Config
from server.host.clubs import ClubStore
from server.host.deletions import LedgerChanges
from server.host.erasure import Erasure, Here
from server.host.exports import Exporter
from server.host.live import LiveStage
from server.host.people import People
from server.host.turns import Turns
from server.host.webhooks import Webhooks
from server.routing.cluster import Cluster
from server.routing.ledgerheads import LedgerHeadPublisher

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

PROFILES_REFRESH_S = 1.0  # another node's correction shows on this node's pages within this


class Node:
    """The stages this node hosts, and its place among the nodes (``Cluster``)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.stages: dict[str, LiveStage] = {}
        self.cluster = Cluster(self, config)
        self.auth = Authenticator(parse_keys(config.api_keys), clock)
        self.webhooks = Webhooks.from_config(config, self.cluster.node_id)
        self.exports = Exporter(
            self.webhooks,
            limit=config.export_queue,
            size=config.export_size,
            nice=config.export_nice,
            clock=clock,
            keys=self.session_keys,  # the child gets them on its stdin
        )
        self.clubs = ClubStore(self.cluster.backend, clock)
        # Joins announce themselves to the whole stage: one per loop pass (server/host/turns.py).
        self.join_turns = Turns()
        self._tasks = OwnedTasks(log, "node")
        # Viewers' connections in worker processes, one per core by default (media/workers.py).
        count = config.media_worker_count
        self.media_workers = WorkerPool(count, config.media, config.log_format) if count > 0 else None
        self._locating: dict[str, asyncio.Lock] = {}
        self.recordings_root = Path(config.recordings_dir)
        self.ledger_changes = LedgerChanges(
            self.recordings_root, self.cluster.backend, self.webhooks.emit, self._tasks.spawn
        )
        self._signing_key: NodeKey | None = None
        self._deleting = asyncio.Lock()  # one deletion at a time: the sweeper's and the API's
        backend = self.cluster.backend
        # People's keys: in Redis when the nodes share one (each node's disk holds none then).
        keys: KeyStore = (
            RedisKeyStore(backend)
            if isinstance(backend, RedisBackend)
            else FileKeyStore(config.people_keys_path)
        )
        self.keys = keys
        # The live keys of the people on this node's stages: recorders seal with them synchronously.
        self.ring = KeyRing()
        self.people = People(backend, config.people_path, self.signing_key, keys, self.webhooks.emit, clock)
        # People's corrected display names and profile fields (issue 15): readers prefer them.
        self._profiles_read = -PROFILES_REFRESH_S  # monotonic time of the last refresh
        self.profiles: ProfileStore = (
            RedisProfileStore(backend)
            if isinstance(backend, RedisBackend)
            else FileProfileStore(config.people_path)
        )
        self.erasure = Erasure(
            self.people,
            keys,
            self.clubs,
            self.exports,
            self.recordings_root,
            config.people_path / "erasures",
            Here(
                self.erase_here,
                self._tell_erased,
                self.recording_now,
                self.signing_key,
                self._deleting,
                self.ledger_changes.publish_heads,
            ),
            self.webhooks.emit,
            clock,
        )
        self.settings = StageSettings(
            recording_mode=config.recording_mode,
            consent_policy_version=config.consent_policy_version,
            speaking_requires_consent=config.speaking_requires_consent,
            max_publishers=config.media_slots,
            max_screen_shares=config.max_screen_shares,
            comment_max_chars=config.comment_max_chars,
            comment_history=config.comment_history,
            comment_rate=config.comment_rate,
            comment_rate_window_s=config.comment_rate_window_s,
            rates=config.rates,
            question_max_open=config.question_max_open,
            question_max_per_person=config.question_max_per_person,
            question_history=config.question_history,
        )

    async def start(self) -> None:
        if self.auth.dev:
            log.warning(
                "DEVELOPMENT MODE: no API keys configured, anyone may mint access tokens at "
                "/api/dev/token; set MEDSTAGE_API_KEYS for anything real"
            )
        if self.media_workers is not None:
            await self.media_workers.start()
        await self.cluster.start()
        await self.webhooks.start()
        if self.config.recording_sweep_interval_s > 0:
            self._tasks.supervise("retention sweeper", self._sweep_forever)
        await self.exports.start()
        # Erasures that waited on a recording this node never stopped (it crashed): done now.
        self._tasks.spawn(self.erasure.resume())

    async def check_not_revoked(self, identity: str) -> None:
        """Revocations are shared by all nodes; during a backend outage they cannot be read, and
        joins on the node hosting the stage go on (its own stage bans still hold)."""
        try:
            revoked = await self.cluster.backend.is_revoked(identity)
        except BackendError:
            log.warning("revocations unreadable: join allowed", extra={"identity": identity})
            return
        if revoked:
            raise Forbidden("identity_revoked", "this identity's access has been revoked")

    async def revoke(self, identity: str) -> int:
        """Refuse the identity everywhere from now on, and disconnect it: from this node's stages here,
        and from every other node's stages through their inboxes (at most once: a node that misses
        the message still refuses the identity's next join and /api call)."""
        await self.cluster.backend.revoke(identity)
        # The revocation itself is stored (above): a node that misses the message still refuses the
        # identity's next join and /api call; only its open sockets there stay open until they reconnect.
        await self._tell_others(["r", identity], "revocation")
        return self.revoke_here(identity)

    def revoke_here(self, identity: str) -> int:
        """Close the identity's connections to the stages this node hosts (relayed ones included)."""
        closed = 0
        for live in self.stages.values():
            people = {**live.stage.participants, **live.stage.observers}  # consoles too
            for pid, person in people.items():
                if person.identity == identity and pid in live.connections:
                    live.connections[pid].close_after_flush(CloseCode.FORBIDDEN, "access revoked")
                    closed += 1
        return closed

    async def rename(self, identity: str, name: str) -> int:
        """A correction of the person's display name, live: on this node's stages, and through the
        relay on every other node's (at most once, as a revocation's: a node that misses it shows the
        new name at the person's next join). How many stages here had them."""
        await self._tell_others(["n", identity, name], "rename")
        return self.rename_here(identity, name)

    def rename_here(self, identity: str, name: str) -> int:
        """Rename the person on every stage this node hosts (``participant.updated``)."""
        renamed = 0
        for live in list(self.stages.values()):
            stage = live.stage
            if not any(
                p.identity == identity for p in [*stage.participants.values(), *stage.observers.values()]
            ):
                continue
            try:
                live.apply(lambda stage, now: stage.rename(identity, name, now))
            except DomainError as exc:  # the name was checked already: a stage that ended meanwhile
                log.warning("live rename refused", extra={"stage": stage.id, "error": str(exc)})
                continue
            renamed += 1
        return renamed

    def names(self, identity: str) -> str | None:
        """``Names`` (recording/profiles.py): the person's corrected display name, from the profile
        store's mirror (``fresh_profiles`` brings it up to date)."""
        return self.profiles.get_name(identity)

    def erase_here(self, identity: str) -> int:
        """The person was erased (server/host/erasure.py): their key leaves this node's ring, every
        recorder here stops capturing them, their sockets to the stages hosted here close (4005)."""
        self.ring.drop(identity)
        self._tasks.spawn(self._forget_profile(identity))  # their corrected name and fields go too
        closed = 0
        for live in self.stages.values():
            recorder = live.recording.recorder
            if recorder is not None:
                recorder.forget(identity)
            # Their comments leave every screen; their questions stay as anonymous tombstones.
            live.apply(lambda stage, now: stage.erase_person(identity, now))
            people = {**live.stage.participants, **live.stage.observers}
            for pid, person in people.items():
                if person.identity == identity and pid in live.connections:
                    live.connections[pid].close_after_flush(CloseCode.ERASED, "erased")
                    closed += 1
        return closed

    async def _forget_profile(self, identity: str) -> None:
        try:
            await self.profiles.delete(identity)
        except (BackendError, OSError, ValueError) as exc:
            log.error(
                "an erased person's profile was not deleted", extra={"identity": identity, "error": repr(exc)}
            )

    def erased_elsewhere(self, identity: str, erasure_id: str, by: str, capacity: str) -> None:
        """Another node erased the person (its relay item ``e``): the same here, recordings included."""
        self.erase_here(identity)
        self._tasks.spawn(self.erasure.erase_files_here(identity, erasure_id, by, capacity))

    async def _tell_erased(self, identity: str, erasure_id: str, by: str, capacity: str) -> int:
        """Every other node does ``erased_elsewhere`` through its inbox; how many were told (the key
        is destroyed in the shared store all the same)."""
        return await self._tell_others(["e", identity, erasure_id, by, capacity], "erasure")

    async def _tell_others(self, item: list[str], what: str) -> int:
        """``item`` into every other live node's inbox (at most once); how many were told. A store
        that cannot list the nodes tells nobody: logged, the caller's own step already done."""
        relay = self.cluster.relay
        if relay is None:
            return 0
        try:
            peers = await self.cluster.backend.nodes() - {self.cluster.node_id}
        except BackendError as exc:
            log.error(f"{what} not told to the other nodes", extra={"error": repr(exc)})
            return 0
        for peer in peers:
            relay.enqueue(peer, item)
        return len(peers)

    def signing_key(self) -> NodeKey:
        """The key that signs consent ledger heads: read, or created, at the first recording (a few
        small blocking writes, once per node) and published beside the recordings."""
        if self._signing_key is None:
            key = NodeKey.load_or_create(self.config.signing_key_path)
            key.publish(self.recordings_root)
            log.info("ledger signing key", extra={"key_id": key.id, "path": str(key.path)})
            self._signing_key = key
        return self._signing_key

    # --- retention (recording/retention.py) ------------------------------------------------------

    def recording_now(self) -> frozenset[str]:
        """``stage/session`` of every session this node records now: never swept, never deleted."""
        return frozenset(
            f"{live.stage.id}/{live.recording.recorder.session_id}"
            for live in self.stages.values()
            if live.recording.recorder is not None
        )

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep_recordings()
            except (OSError, SigningKeyError) as exc:  # the disk or the key: try again next period
                log.error("retention sweep failed", extra={"error": repr(exc)})
            await asyncio.sleep(self.config.recording_sweep_interval_s)

    async def sweep_recordings(self) -> list[retention.Candidate]:
        """One pass of the sweeper: delete what expired (off the loop); returns what was deleted."""
        root, days, now = self.recordings_root, self.config.recording_retention_days, self.clock()
        due, _ = await asyncio.to_thread(
            retention.sweep, root, now, days, None, dry_run=True, active=self.recording_now()
        )
        if not due:
            return []
        key = self.signing_key()
        async with self._deleting:
            deleted, refused = await asyncio.to_thread(
                retention.sweep, root, now, days, key, active=self.recording_now()
            )
        for c in deleted:
            log.info(
                "recording deleted: retention over",
                extra={"stage": c.stage_id, "session": c.session_id, "retention_days": c.retention_days},
            )
            self.ledger_changes.deleted(
                c.stage_id, c.session_id, "retention", "sweeper", c.retention_days, c.paths
            )
        for c, why in refused:
            log.error(
                "expired recording not deleted",
                extra={"stage": c.stage_id, "session": c.session_id, "code": why.code, "error": why.message},
            )
        return deleted

    async def delete_recording(self, session: Path, by: str) -> dict[str, Any] | None:
        """Delete a session's media, timeline and exports by hand (``DELETE`` in the API), as the
        sweeper does; raises ``retention.NotDeletable`` (``recording``: it is being recorded)."""
        if f"{session.parent.name}/{session.name}" in self.recording_now():
            raise retention.NotDeletable("recording", "this session is being recorded: stop it first")
        try:
            key = self.signing_key()
        except (OSError, SigningKeyError) as exc:
            raise retention.NotDeletable("no_key", f"the node's signing key is unusable: {exc}") from exc
        async with self._deleting:
            try:
                record = await asyncio.to_thread(
                    retention.delete_session,
                    session,
                    now=self.clock(),
                    reason="by hand",
                    by=by,
                    signing_key=key,
                )
            except OSError as exc:
                raise retention.NotDeletable("io_error", f"the disk refused: {exc}") from exc
        if record is not None:  # None: deleted already, announced then
            self.ledger_changes.deleted(
                record["stage_id"], record["session_id"], "by hand", by, None, record["deleted"]
            )
        return record

    def spawn(self, work: Any) -> None:
        self._tasks.spawn(work)

    def nodes_changed(self, urls: list[str]) -> None:
        """A node came or went: every client of the stages hosted here gets the new list (relayed
        clients too: their front node sends them only what the host does)."""
        for live in self.stages.values():
            live.broadcast(wire_out.Nodes(nodes=urls))

    async def create_stage(
        self,
        stage_id: str | None,
        title: str | None,
        scheduled: bool = False,
        club_id: str | None = None,
        retention_days: int | None = None,
    ) -> LiveStage:
        stage_id = stage_id or secrets.token_urlsafe(6).replace("_", "x").replace("-", "y")
        if stage_id in self.stages:
            raise StageExists(f"stage {stage_id} already exists")
        lease = await self.cluster.claim_new(stage_id)
        if stage_id in self.stages:  # created here meanwhile
            raise StageExists(f"stage {stage_id} already exists")
        state = StageState.SCHEDULED if scheduled else StageState.LIVE
        if retention_days is None and club_id is not None:
            retention_days = await self._club_retention(club_id)
        settings = replace(self.settings, recording_retention_days=retention_days)
        stage = Stage(
            stage_id, title or stage_id, self.clock(), settings=settings, state=state, club_id=club_id
        )
        live = self._host(stage, lease)
        live.record_if_due()
        log.info("stage created", extra={"stage": stage_id, "node": self.cluster.node_id})
        return live

    async def _club_retention(self, club_id: str) -> int | None:
        """The club's retention for a stage created now; the node's default when it cannot be read
        (the club is gone, or the store is unreachable: the stage is not refused for that)."""
        try:
            return (await self.clubs.get(club_id)).recording_retention_days
        except (ClubError, BackendError) as exc:
            log.warning("club retention unreadable", extra={"club": club_id, "error": repr(exc)})
            return None

    async def locate(
        self, stage_id: str, *, create: bool = False, club_id: str | None = None
    ) -> LiveStage | Owner:
        """The stage if this node hosts it (taking it over if its host is gone), else its host.
        With ``create``, a stage that never existed is created here."""
        live = self.stages.get(stage_id)
        if live is not None:
            return live
        lock = self._locating.setdefault(stage_id, asyncio.Lock())
        try:
            async with lock:  # two joins racing for a stage restore it once
                live = self.stages.get(stage_id)
                if live is not None:
                    return live
                try:
                    found = await self.cluster.find(stage_id)
                except StageNotFound:
                    if not create:
                        raise
                    return await self.create_stage(stage_id, None, club_id=club_id)
                if isinstance(found, Owner):
                    return found
                lease, state, last_seq = found
                stage = durable.restore(state, last_seq=last_seq, now=self.clock())
                log.warning(
                    "stage taken over",
                    extra={"stage": stage_id, "node": self.cluster.node_id, "seq": last_seq},
                )
                return self._host(stage, lease, restored=True)
        finally:
            if not lock.locked() and self._locating.get(stage_id) is lock:
                del self._locating[stage_id]

    def _host(self, stage: Stage, lease: Lease, restored: bool = False) -> LiveStage:
        stage_id = stage.id
        live: LiveStage

        def notify(participant_id: str, message: MediaMessage) -> None:
            live.send(participant_id, message)

        def lost(participant_id: str) -> None:
            """Their media worker died: they join again (a fresh connection, on a live worker)."""
            conn = live.connections.get(participant_id)
            if conn is not None:
                conn.close_after_flush(CloseCode.MEDIA_LOST, "the media connection was lost; reconnect")
            else:
                live.spawn(media.remove(participant_id))

        media = MediaRoom(stage_id, self.config.media, notify, self.media_workers, lost)
        live = LiveStage(
            stage,
            media,
            self.recordings_root,
            self.clock,
            self.webhooks,
            restored=restored,
            signing_key=self.signing_key,
            ring=self.ring,
            ledger_heads=LedgerHeadPublisher(self.cluster.backend, stage_id),
        )
        live.stage_log = self.cluster.hosting(stage, lease, live.front_of)
        live.recording.after_stop = self.erasure.session_stopped
        live.announce()
        live.start_ticker()
        self.stages[stage_id] = live
        return live

    async def person_key(self, identity: str) -> PersonKey | None:
        """The person's key, made on first use and put in the ring before anything of theirs can be
        recorded. A person erased earlier who comes back gets a new key: what was erased stays erased,
        what they do from now on is theirs again. None when the key store cannot answer (Redis down,
        a disk error): the join goes on, as it does when revocations are unreadable, and a recording
        keeps what it may of them unsealed, as recordings were before people had keys."""
        key = self.ring.for_identity(identity)
        if key is None:
            try:
                key = await self.keys.get_or_create(identity, self.clock(), after_destroy=True)
            except (BackendError, OSError) as exc:
                log.warning(
                    "person key unavailable: join allowed", extra={"identity": identity, "error": repr(exc)}
                )
                return None
            self.ring.put(key)
        return key

    async def fresh_profiles(self) -> ProfileStore:
        """The profile store brought up to date with every node's corrections (at most every
        ``PROFILES_REFRESH_S``: a page's many requests read the store once; this node's own corrections
        are in it at once); when the store cannot answer (Redis down, a disk error), as it last was:
        a page shows an older name, never fails."""
        now = time.monotonic()
        if now - self._profiles_read < PROFILES_REFRESH_S:
            return self.profiles
        self._profiles_read = now  # a wave of joins reads the store once, not once each
        try:
            await self.profiles.refresh()
        except (BackendError, OSError, ValueError) as exc:
            log.warning("profiles unreadable: the last ones known are used", extra={"error": repr(exc)})
        return self.profiles

    async def keys_by_id(self, key_ids: set[str]) -> KeyRing:
        """The live keys among ``key_ids`` (to open sealed tracks): from the ring, else the store; a
        destroyed key is not there (its files read as erased). A store that cannot answer gives what
        the ring holds."""
        ring = KeyRing(k for k in map(self.ring.by_id, key_ids) if k is not None)
        if len(ring) < len(key_ids):
            try:
                stored = await load_ring(self.keys)
            except (BackendError, OSError, ValueError) as exc:
                log.warning("person keys unavailable", extra={"error": repr(exc)})
                return ring
            for key_id in key_ids - ring.key_ids():
                key = stored.by_id(key_id)
                if key is not None:
                    ring.put(key)
        return ring

    async def session_keys(self, session_dir: Path) -> KeyRing:
        """The live keys a recorded session's sealed tracks were made with (its export, downloads)."""
        return await self.keys_by_id(await asyncio.to_thread(manifest_key_ids, session_dir))

    async def let_go(self, stage_id: str) -> None:
        """Another node hosts this stage now (our lease lapsed and was taken): its clients go there."""
        live = self.stages.pop(stage_id, None)
        if live is None:
            return
        await self.cluster.stop_hosting(live.stage.id, release=False)
        await live.close(CloseCode.STAGE_MOVED, "the stage moved to another node; reconnect")

    def get(self, stage_id: str) -> LiveStage:
        live = self.stages.get(stage_id)
        if live is None:
            raise StageNotFound(f"stage {stage_id} does not exist")
        return live

    def new_participant_id(self, live: LiveStage) -> str:
        while True:
            pid = "p-" + secrets.token_hex(4)
            if pid not in live.stage.participants:
                return pid

    def stage_info(self, live: LiveStage) -> dict[str, Any]:
        return {
            **live.stage.snapshot(),
            "club_id": live.stage.club_id,
            "node": self.cluster.node_id,
            "participants": len(live.stage.participants),
            "publishers": len(live.stage.publishers),
            "url": f"{self.config.url}/s/{live.stage.id}",
        }

    def club_stages(self, club_id: str) -> list[dict[str, Any]]:
        """The club's stages hosted here, and who is in each (for the club's admins)."""
        return [
            {
                **self.stage_info(live),
                "participants": [
                    {"id": p.id, "name": p.name, "role": str(p.role), "identity": p.identity}
                    for p in live.stage.participants.values()
                ],
            }
            for live in self.stages.values()
            if live.stage.club_id == club_id
        ]

    async def close(self) -> None:
        for live in list(self.stages.values()):
            await live.close()
        await self.cluster.close()
        await self.exports.close()
        await self.webhooks.close(drain_s=self.config.shutdown_timeout_s / 2)
        await self._tasks.cancel_all()
        if self.media_workers is not None:
            await self.media_workers.close()
