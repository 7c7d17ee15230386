"""What the node's readers of recordings (report, playback) open people's sealed items with (issue 15).

A recording holds what it recorded of a person sealed with their key (recording/items.py). The node's
ring has the keys of the people on its stages; a session's other keys (people gone since, a node
restarted) are read from the key store, by the key ids the session's files name. A key destroyed
(erasure) is in neither: what it sealed reads as erased.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from recording.items import Names, ring_for, session_key_ids
from recording.vault import KeyRing

if TYPE_CHECKING:
    from server.host.node import Node

__all__ = ["names_of", "session_ring"]


async def session_ring(node: Node, directory: Path) -> KeyRing:
    """The live keys of the people whose items the session in ``directory`` sealed. Raises
    ``BackendError`` or ``OSError`` when the key store cannot answer (never read that as erased)."""
    wanted = await asyncio.to_thread(session_key_ids, directory)
    return await ring_for(node.keys, wanted, node.ring)


def names_of(node: Node) -> Names | None:
    """identity -> current display name (corrections), when the node has them; else None."""
    names = getattr(node, "names", None)
    return names if callable(names) else None
