"""What a hosted stage needs of a participant's connection (``server.signalling`` implements it):
the stage sends to it and closes it, and never knows whether its socket is here or on another node."""

from __future__ import annotations

from typing import Protocol

import msgspec

from server.wire import Outgoing


class Client(Protocol):
    moderator_view: bool  # whether the last state this client got was a moderator's

    @property
    def front(self) -> str | None:
        """The node holding the socket when it is not this one (a relayed client), else None."""

    def send(self, message: msgspec.Struct | Outgoing) -> None: ...

    def close_after_flush(self, code: int, reason: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...
