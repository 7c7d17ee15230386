"""Offer/answer without ``copy.deepcopy``: aiortc's codec matching, with plain copies.

aiortc 1.16 ``find_common_codecs`` (rtcpeerconnection.py 82-110) deep-copies every matched codec,
and ``setRemoteDescription`` runs it once per m-line: 12 per viewer's answer, the largest single
item of a join in the node's profile (≈ 45 % of ``setRemoteDescription``, 7 ms of 12 per viewer
under cProfile). A codec is a dataclass of strings and ints, a parameters dict of strings and ints,
and a list of ``RTCRtcpFeedback`` that nobody mutates: a copy of the codec, its dict and its list
is the same value. ``install()`` puts :func:`find_common_codecs` where aiortc looks it up (a module
global); ``check()`` and ``tests/media/test_negotiation_hooks.py`` compare its results with aiortc's
own on the codec lists browsers and aiortc offer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aiortc.rtcpeerconnection
from aiortc import rtp
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

_original: Any = aiortc.rtcpeerconnection.find_common_codecs


class HookMissing(RuntimeError):
    """aiortc no longer looks the way this module was written against."""


def _copy(codec: RTCRtpCodecParameters) -> RTCRtpCodecParameters:
    return replace(codec, rtcpFeedback=list(codec.rtcpFeedback), parameters=dict(codec.parameters))


def find_common_codecs(
    local_codecs: list[RTCRtpCodecParameters], remote_codecs: list[RTCRtpCodecParameters]
) -> list[RTCRtpCodecParameters]:
    """aiortc's ``find_common_codecs``, line for line, with ``_copy`` for ``copy.deepcopy``."""
    is_codec_compatible = aiortc.rtcpeerconnection.is_codec_compatible
    common = []
    common_base: dict[int, RTCRtpCodecParameters] = {}
    for c in remote_codecs:
        # for RTX, check we accepted the base codec
        if is_rtx(c):
            apt = c.parameters.get("apt")
            if isinstance(apt, int) and apt in common_base:
                base = common_base[apt]
                if c.clockRate == base.clockRate:
                    common.append(_copy(c))
            continue
        for codec in local_codecs:
            if is_codec_compatible(codec, c):
                codec = _copy(codec)
                if c.payloadType in rtp.DYNAMIC_PAYLOAD_TYPES:
                    codec.payloadType = c.payloadType
                codec.rtcpFeedback = [x for x in codec.rtcpFeedback if x in c.rtcpFeedback]
                common.append(codec)
                assert codec.payloadType is not None
                common_base[codec.payloadType] = codec
                break
    return common


def install() -> None:
    module: Any = aiortc.rtcpeerconnection
    module.find_common_codecs = find_common_codecs


def check() -> None:
    """Fail loudly if aiortc's codec matching moved or no longer gives what ours gives."""
    module: Any = aiortc.rtcpeerconnection
    if not callable(getattr(module, "find_common_codecs", None)):
        raise HookMissing("aiortc.rtcpeerconnection.find_common_codecs is gone")
    if not callable(getattr(module, "is_codec_compatible", None)):
        raise HookMissing("aiortc.rtcpeerconnection.is_codec_compatible is gone")
    for kind, local in module.CODECS.items():
        remote = _renumbered(local)
        if find_common_codecs(local, remote) != _original(local, remote):
            raise HookMissing(f"aiortc's find_common_codecs now matches {kind} codecs differently")


def _renumbered(codecs: list[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
    """The same codecs under other dynamic payload types, in reverse order, one feedback dropped: what
    a remote answer looks like to the matcher."""
    offset: dict[int | None, int | None] = {c.payloadType: 127 - i for i, c in enumerate(codecs)}
    out = []
    for c in reversed(codecs):
        parameters = dict(c.parameters)
        if "apt" in parameters:
            parameters["apt"] = offset.get(parameters["apt"], parameters["apt"])  # type: ignore[arg-type]
        out.append(
            replace(
                c,
                payloadType=offset.get(c.payloadType, c.payloadType),
                rtcpFeedback=list(c.rtcpFeedback[1:]),
                parameters=parameters,
            )
        )
    return out
