"""Simulcast in a publisher's offer (RFC 8853 / RFC 8851) and in our answer: SDP text only.

aiortc 1.16 neither reads nor writes ``a=rid`` / ``a=simulcast``. A browser that simulcasts offers, in
its video m-section::

    a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
    a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
    a=rid:l send
    a=rid:m send
    a=rid:h send
    a=simulcast:send l;m;h

``parse_offer`` reads that (bounded and validated: at most ``MAX_LAYERS`` rids of at most
``MAX_RID_LENGTH`` characters of RFC 8851's rid-id alphabet); ``munge_answer`` adds the matching
``a=rid:<r> recv`` lines and ``a=simulcast:recv ...`` to aiortc's answer, which otherwise would make the
browser fall back to one encoding. The header extensions are negotiated through
media/simulcast_hooks.py, the receive path is media/publisher.py's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from media.errors import BadSdp

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
MAX_LAYERS = 3
MAX_RID_LENGTH = 16
START_KBPS = 1500  # the browser's first bandwidth estimate for a simulcast video (see _start_bitrate)
_RID = re.compile(r"^[A-Za-z0-9_-]+$")
# Names whose order is known whatever order the offer lists them in (lowest first).
_KNOWN_ORDERS = (("l", "m", "h"), ("q", "h", "f"), ("low", "mid", "high"))


@dataclass(frozen=True, slots=True)
class SimulcastOffer:
    """The simulcast part of an offer's video m-section."""

    index: int  # the m-section's index in the offer
    mid: str | None
    offered: tuple[str, ...]  # rids in the order of the offer's a=simulcast line
    layers: tuple[str, ...]  # the same rids, lowest first
    extensions: tuple[tuple[int, str], ...]  # (id, uri) of the offered RID / repaired RID extensions


def _sections(text: str) -> list[list[str]]:
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    sections: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def parse_offer(text: str) -> SimulcastOffer | None:
    """The offer's simulcast video, None when it does not simulcast. Raises BadSdp when it tries to
    and gets it wrong (bad or too many rids, a simulcast line naming unknown rids, no RID extension)."""
    for index, section in enumerate(_sections(text)[1:]):
        if not section[0].startswith("m=video"):
            continue
        rids: list[str] = []
        simulcast: str | None = None
        mid: str | None = None
        extensions: list[tuple[int, str]] = []
        for line in section:
            if line.startswith("a=rid:"):
                parts = line[6:].split()
                if len(parts) < 2 or parts[1] not in ("send", "recv"):
                    raise BadSdp(f"bad rid line: {line[:80]!r}")
                if parts[1] == "send":
                    rids.append(_check_rid(parts[0]))
            elif line.startswith("a=simulcast:"):
                if simulcast is not None:
                    raise BadSdp("more than one a=simulcast line in a video m-section")
                simulcast = line[12:].strip()
            elif line.startswith("a=mid:"):
                mid = line[6:].strip()
            elif line.startswith("a=extmap:"):
                parts = line[9:].split()
                if len(parts) >= 2 and parts[1] in (RID_URI, REPAIRED_RID_URI):
                    ext_id = parts[0].split("/")[0]
                    if not ext_id.isdigit() or not 1 <= int(ext_id) <= 255:
                        raise BadSdp(f"bad extmap line: {line[:80]!r}")
                    extensions.append((int(ext_id), parts[1]))
        if simulcast is None and not rids:
            continue
        if simulcast is None:
            raise BadSdp("a=rid lines without an a=simulcast line")
        offered = _send_list(simulcast)
        if len(set(rids)) != len(rids):
            raise BadSdp("a rid is declared twice")
        unknown = [r for r in offered if r not in rids]
        if unknown:
            raise BadSdp(f"a=simulcast names rids without an a=rid line: {', '.join(unknown)}")
        if len(offered) > MAX_LAYERS:
            raise BadSdp(f"at most {MAX_LAYERS} simulcast encodings")
        if RID_URI not in {uri for _, uri in extensions}:
            raise BadSdp(f"simulcast needs the {RID_URI} header extension")
        return SimulcastOffer(index, mid, offered, _lowest_first(offered), tuple(extensions))
    return None


def _check_rid(rid: str) -> str:
    if not 1 <= len(rid) <= MAX_RID_LENGTH or not _RID.match(rid):
        raise BadSdp(f"a rid is 1-{MAX_RID_LENGTH} letters, digits, '-' or '_'")
    return rid


def _send_list(value: str) -> tuple[str, ...]:
    """``send l;m;h`` (RFC 8853 §5.1): the first alternative of each stream, '~' (paused) dropped."""
    parts = value.split()
    if len(parts) != 2 or parts[0] != "send":
        raise BadSdp("a publisher's a=simulcast must be 'send <rid>;<rid>...'")
    offered = []
    for stream in parts[1].split(";"):
        first = stream.split(",")[0].lstrip("~")
        offered.append(_check_rid(first))
    if len(set(offered)) != len(offered):
        raise BadSdp("a=simulcast names a rid twice")
    return tuple(offered)


def _lowest_first(offered: tuple[str, ...]) -> tuple[str, ...]:
    """Known names in their known order; otherwise the offer's order (clients list lowest first, as
    ``sendEncodings`` does in our client and in Chrome's own examples)."""
    for order in _KNOWN_ORDERS:
        if set(offered) <= set(order):
            return tuple(r for r in order if r in offered)
    return offered


def munge_answer(answer: str, offer: SimulcastOffer) -> str:
    """aiortc's answer with ``a=rid:<r> recv`` and ``a=simulcast:recv`` in the simulcast m-section."""
    eol = "\r\n" if "\r\n" in answer else "\n"
    sections = _sections(answer)
    target = offer.index + 1
    if target >= len(sections) or not sections[target][0].startswith("m=video"):
        raise BadSdp("the answer has no video m-section where the offer simulcasts")
    section = sections[target]
    if section[0].split()[1] == "0":  # rejected: nothing to receive
        return answer
    _start_bitrate(section)
    section += [f"a=rid:{rid} recv" for rid in offer.offered]
    section.append("a=simulcast:recv " + ";".join(offer.offered))
    return eol.join(line for s in sections for line in s) + eol


def _start_bitrate(section: list[str]) -> None:
    """``x-google-start-bitrate`` on each VP8/H264 format: the browser's estimate starts high enough
    for all three encodings (150 + 500 kbit/s and the top one's 600 minimum) instead of at 300 kbit/s,
    from where its loss-based estimate needs ≈ 20 s to let the top layer on. On a poorer uplink the
    loss it meets brings it down within a second or two."""
    pts = []
    for line in section:
        if line.startswith("a=rtpmap:"):
            pt, _, codec = line[9:].partition(" ")
            if codec.lower().startswith(("vp8/", "h264/")):
                pts.append(pt)
    for pt in pts:
        prefix = f"a=fmtp:{pt} "
        index = next((i for i, line in enumerate(section) if line.startswith(prefix)), None)
        if index is None:
            section.append(f"{prefix}x-google-start-bitrate={START_KBPS}")
        elif "x-google-start-bitrate" not in section[index]:
            section[index] += f";x-google-start-bitrate={START_KBPS}"
