"""What the node's readers of recordings (report, playback) open people's sealed items with (issue 15).

A recording holds what it recorded of a person sealed with their key (recording/items.py). The node's
ring has the keys of the people on its stages; a session's other keys (people gone since, a node
restarted) are read from the key store, by the key ids the session's files name. A key destroyed
(erasure) is in neither: what it sealed reads as erased.

The store is asked as little as possible: which identity a key id belongs to is learned from one
``list`` and kept (a key id is never reused), and a key id that no ``list`` made after the session's
files were read knows is destroyed for good (it existed when the file was written). The key ids of a
session are kept while its files are unchanged, so a playback request does not read a timeline again.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from recording.items import Names, session_key_ids
from recording.vault import KeyRing

if TYPE_CHECKING:
    from server.host.node import Node

__all__ = ["names_of", "session_ring"]

_FILES = ("manifest.json", "consent.jsonl", "timeline.msgpack")
_SESSIONS = 256  # key ids of this many sessions are kept


class _Index:
    """One node's knowledge of key ids: whose each is, and which are gone."""

    def __init__(self) -> None:
        self.identity: dict[str, str] = {}
        self.gone: set[str] = set()
        self.lock = asyncio.Lock()


_INDEXES: weakref.WeakKeyDictionary[object, _Index] = weakref.WeakKeyDictionary()
_KEY_IDS: OrderedDict[Path, tuple[tuple[tuple[int, int] | None, ...], frozenset[str]]] = OrderedDict()
_KEY_IDS_LOCK = threading.Lock()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def key_ids_of(directory: Path) -> frozenset[str]:
    """The key ids the session's files name, read again only when one of them changed (blocking)."""
    stamp = tuple(_stamp(directory / name) for name in _FILES)
    with _KEY_IDS_LOCK:
        known = _KEY_IDS.get(directory)
        if known is not None and known[0] == stamp:
            _KEY_IDS.move_to_end(directory)
            return known[1]
    found = frozenset(session_key_ids(directory))
    with _KEY_IDS_LOCK:
        _KEY_IDS[directory] = (stamp, found)
        _KEY_IDS.move_to_end(directory)
        while len(_KEY_IDS) > _SESSIONS:
            _KEY_IDS.popitem(last=False)
    return found


async def session_ring(node: Node, directory: Path) -> KeyRing:
    """The live keys of the people whose items the session in ``directory`` sealed. Raises
    ``BackendError`` or ``OSError`` when the key store cannot answer (never read that as erased)."""
    wanted = await asyncio.to_thread(key_ids_of, directory)
    index = _INDEXES.setdefault(node, _Index())
    ring, missing = KeyRing(), set()
    for key_id in wanted:
        key = node.ring.by_id(key_id)
        if key is not None:
            ring.put(key)
        elif key_id not in index.gone:
            missing.add(key_id)
    if missing - index.identity.keys():
        async with index.lock:
            unknown = missing - index.identity.keys()
            if unknown:
                for entry in await node.keys.list():
                    if entry.key_id is not None:
                        index.identity[entry.key_id] = entry.identity
                index.gone |= unknown - index.identity.keys()
    for key_id in missing:
        identity = index.identity.get(key_id)
        if identity is None:
            continue
        key = await node.keys.get(identity)
        if key is not None and key.key_id == key_id:
            ring.put(key)
        else:  # destroyed (a person erased and back has a new key: this one never returns)
            index.gone.add(key_id)
    return ring


def names_of(node: Node) -> Names | None:
    """identity -> current display name (corrections: the node's profile store, recording/profiles.py,
    when it has one); else None."""
    get_name = getattr(getattr(node, "profiles", None), "get_name", None)
    return get_name if callable(get_name) else None
