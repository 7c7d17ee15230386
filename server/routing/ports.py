"""What routing needs of the layers above it, as interfaces: routing is called, and calls up only
through these (``server.host.Node`` is the ``Host``; ``server.signalling`` provides the clients).
Keeping them here is what lets routing (several nodes) never import the hosting or signalling code."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from server.backend import Backend
from server.config import Config
from server.wire import Outgoing


class Host(Protocol):
    """The node that hosts stages."""

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` as a task the node owns."""

    async def let_go(self, stage_id: str) -> None:
        """Another node took the stage over: close it here, its clients reconnect there."""

    def revoke_here(self, identity: str) -> int:
        """Close the identity's connections to the stages hosted here."""

    def erased_elsewhere(self, identity: str, erasure_id: str, by: str, capacity: str) -> None:
        """The person was erased on another node: forget their key, stop recording them, close their
        connections to the stages hosted here, erase them from this node's recordings."""
    def rename_here(self, identity: str, name: str) -> int:
        """A correction of the person's display name: rename them on the stages hosted here."""

    def nodes_changed(self, urls: list[str]) -> None:
        """A node came or went: tell the clients of the stages hosted here (``nodes``)."""


class FrontClient(Protocol):
    """A client whose socket is on this node, of a stage hosted by another node."""

    upstream: str | None
    relay_id: str | None

    def send(self, message: Outgoing) -> None: ...

    def close_after_flush(self, code: int, reason: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class RemoteClient(Protocol):
    """On the host: a client whose socket is on another node (its ``front``)."""

    front: str

    def feed(self, frame: str | bytes) -> None: ...

    def drop(self) -> None: ...

    def close_after_flush(self, code: int, reason: str) -> None: ...

    async def run(self) -> None: ...


# (front node, connection id) -> the host's side of a relayed client
RemoteFactory = Callable[[str, str], RemoteClient]


class Place(Protocol):
    """This node's place among the nodes, as the relay and the stage logs see it (``Cluster``)."""

    node_id: str
    url: str
    config: Config
    backend: Backend
    host: Host
    open_remote: RemoteFactory | None

    def set_unavailable(self) -> None:
        """The backend just failed: /readyz says so for a while."""
