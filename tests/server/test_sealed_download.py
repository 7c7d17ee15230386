"""Downloading sealed tracks over the API: decrypted on the fly (whole, a range, the last bytes), 410
``erased`` without the key, a damaged file a 500 problem, a chunk altered mid-file never served as
if whole; plain tracks served as before."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiohttp
import pytest

from recording.keys import new_key
from recording.sealed import HEADER_BYTES, open_plaintext
from recording.vault import KeyRing
from tests.support.inprocess import serve
from tests.support.session_maker import Capture, Speaker, make_session
from tests.support.tokens import bearer

KEY = new_key("id-p-a", 1.0)


async def test_sealed_tracks_are_served_decrypted_and_refused_once_erased(tmp_path: Path) -> None:
    stage = "dl-" + uuid.uuid4().hex[:6]
    session_id = "20261204T060000Z-" + uuid.uuid4().hex[:4]
    session = make_session(
        tmp_path / "recordings" / stage / session_id,
        [
            Speaker("p-a", (200, 30, 30), captures=[Capture(0.0, 2.0)], key=KEY),
            Speaker("p-b", (30, 200, 30), captures=[Capture(0.0, 1.0)]),  # no key: plain files
        ],
        session_id,
    )
    sealed = session / "tracks" / "p-a-video-1.webm.sealed"
    with open_plaintext(sealed, KeyRing([KEY])) as stream:
        plaintext = stream.read()
    async with serve(tmp_path, media_workers=0) as running, aiohttp.ClientSession() as http:
        async with http.post(f"{running.url}/api/stages", json={"id": stage}, headers=bearer()) as r:
            assert r.status == 201
        base = f"{running.url}/api/stages/{stage}/recordings/{session_id}/files/tracks/"
        running.node.ring.put(KEY)  # the person is on the node (joined): their key is in its ring

        async with http.get(base + sealed.name, headers=bearer()) as r:
            assert r.status == 200 and await r.read() == plaintext
            assert r.headers["Content-Disposition"] == 'attachment; filename="p-a-video-1.webm"'
        async with http.get(base + sealed.name, headers={**bearer(), "Range": "bytes=-100"}) as r:
            assert r.status == 206 and await r.read() == plaintext[-100:]
        async with http.get(base + "p-b-video-1.webm", headers=bearer()) as r:
            assert r.status == 200 and (await r.read()).startswith(b"\x1a\x45\xdf\xa3")  # plain, as before
        async with http.get(base + sealed.name) as r:
            assert r.status == 401  # the same access rules as every recording file

        # A chunk altered in the middle: the download stops there, never padded or passed off as whole.
        raw = bytearray(sealed.read_bytes())
        raw[HEADER_BYTES + 4 + 100] ^= 0xFF  # inside the first chunk's ciphertext
        altered = sealed.with_name("p-a-audio-1.webm.sealed")
        altered.write_bytes(bytes(raw))
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(base + altered.name, headers=bearer()) as r:
                assert r.status == 200
                await r.read()
        raw[HEADER_BYTES : HEADER_BYTES + 4] = b"\xff\xff\xff\xff"  # an impossible chunk length
        altered.write_bytes(bytes(raw))
        async with http.get(base + altered.name, headers=bearer()) as r:
            assert r.status == 500 and (await r.json())["code"] == "damaged"

        # The key destroyed: neither the ring nor the store has it.
        running.node.ring.drop("id-p-a")
        async with http.get(base + sealed.name, headers=bearer()) as r:
            assert r.status == 410 and (await r.json())["code"] == "erased"
