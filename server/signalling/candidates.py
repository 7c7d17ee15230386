"""Trickled ICE candidates of one connection's peer connections (publisher, screen, subscriber): a
candidate that arrives while that peer connection's SDP exchange is in progress waits, and is added
once the exchange is done; a candidate aiortc cannot use is refused to its sender, never raised."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiortc.sdp import candidate_from_sdp

from media.room import IcePeer
from server import wire

log = logging.getLogger(__name__)


class Candidates:
    def __init__(
        self,
        peer: Callable[[str], IcePeer | None],
        refuse: Callable[[str, Any], None],
        context: Callable[..., dict[str, Any]],
    ) -> None:
        self._peer = peer  # the connection's publisher or subscriber peer connection, if any
        self._refuse = refuse  # an invalid_message error frame to the sender
        self._context = context  # the connection's log context
        self._early: dict[str, list[wire.IceCandidateInit]] = {
            "publisher": [],
            "subscriber": [],
            "screen": [],  # the screen share's publisher connection
        }

    async def on_candidate(self, request: wire.IceCandidate, *, busy: bool) -> None:
        if request.candidate is None or not request.candidate.candidate:
            return  # end of candidates: aiortc needs no notice
        if busy:
            self._early[request.pc].append(request.candidate)
            return
        await self._add(request.pc, request.candidate, request.id)

    async def flush(self, pc: str) -> None:
        """The SDP exchange of ``pc`` is done: add what waited for it."""
        queued, self._early[pc] = self._early[pc], []
        for candidate in queued:
            await self._add(pc, candidate, None)

    async def _add(self, pc_name: str, init: wire.IceCandidateInit, request_id: Any) -> None:
        pc = self._peer(pc_name)
        if pc is None:
            self._refuse(f"no {pc_name} connection to add a candidate to", request_id)
            return
        text = init.candidate.removeprefix("candidate:")
        try:
            candidate = candidate_from_sdp(text)
        except (ValueError, IndexError):
            self._refuse("ice.candidate: not an ICE candidate line", request_id)
            return
        candidate.sdpMid = init.sdpMid
        candidate.sdpMLineIndex = init.sdpMLineIndex
        try:
            await pc.addIceCandidate(candidate)
        except Exception as exc:  # aiortc raises ValueError and others for candidates it refuses
            log.info("ice candidate refused", exc_info=exc, extra=self._context(pc=pc_name))
            self._refuse(f"ice.candidate: {exc}", request_id)
