"""TURN credentials (server/turn.py): coturn's REST-API shared-secret scheme, checked by coturn itself
(an aioice TURN client allocates a relay with them), the TURN settings' validation, and `joined`
carrying a fresh per-participant credential at every join."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from pathlib import Path

import aioice.turn
import pytest

from server.config import ConfigError, load
from server.turn import TurnSettings, credential, turn_user
from tests.conftest import RunningNode, start_node
from tests.support.client import MedstageClient
from tests.support.coturn import SECRET, coturn


def test_the_credential_is_base64_of_hmac_sha1_of_the_username() -> None:
    # RFC 2104 test case 2 key/data ("Jefe", "what do ya want for nothing?"), HMAC-SHA1.
    assert base64.b64decode(credential("Jefe", "what do ya want for nothing?")).hex() == (
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    )


def test_each_participant_gets_a_username_with_expiry_and_its_own_id() -> None:
    turn = TurnSettings(urls=["turn:t:3478?transport=udp"], stun_urls=["stun:t:3478"], secret=SECRET, ttl=600)
    servers = turn.browser_servers("p-3f2a9c", now=1_796_000_000.7)
    assert servers[0] == {"urls": ["stun:t:3478"]}
    entry = servers[1]
    assert entry["urls"] == ["turn:t:3478?transport=udp"]
    assert entry["username"] == "1796000600:p-3f2a9c"
    expected = hmac.new(SECRET.encode(), b"1796000600:p-3f2a9c", hashlib.sha1).digest()
    assert base64.b64decode(str(entry["credential"])) == expected
    assert turn_user("a:b c") == "a_b_c", "no ':' in the user part: coturn splits there"
    assert len(turn_user("x" * 500)) == 64
    assert SECRET not in repr(turn), "the secret stays out of reprs (logs)"


async def _allocate(port: int, entry: dict[str, object], transport: str) -> bool:
    username, password = str(entry["username"]), str(entry["credential"])
    try:
        transport_, _ = await asyncio.wait_for(
            aioice.turn.create_turn_endpoint(
                asyncio.DatagramProtocol, ("127.0.0.1", port), username, password, transport=transport
            ),
            5,
        )
    except aioice.stun.TransactionFailed as exc:
        assert exc.response.attributes["ERROR-CODE"][0] == 401, exc
        return False
    transport_.close()
    return True


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_coturn_accepts_our_credential_and_refuses_expired_or_foreign_ones(
    tmp_path: Path, transport: str
) -> None:
    turn = TurnSettings(urls=["turn:x"], secret=SECRET, ttl=60)
    with coturn(tmp_path) as server:
        good = turn.browser_servers("p-1", time.time())[0]
        assert await _allocate(server.port, good, transport)
        expired = turn.browser_servers("p-1", time.time() - 120)[0]  # expired a minute ago
        assert not await _allocate(server.port, expired, transport)
        other = TurnSettings(urls=["turn:x"], secret="another-secret-of-32-characters!", ttl=60)
        foreign = other.browser_servers("p-1", time.time())[0]
        assert not await _allocate(server.port, foreign, transport)
        assert "Cannot find credentials of user" in server.log(), "refused by its authentication"


def test_turn_settings_are_validated_without_quoting_the_secret(tmp_path: Path) -> None:
    env = {"MEDSTAGE_TURN_URLS": "turn:t:3478?transport=udp, turns:t:5349?transport=tcp"}
    config = load(env={**env, "MEDSTAGE_TURN_SECRET": SECRET, "MEDSTAGE_TURN_TTL": "600"})
    assert config.turn.urls == ["turn:t:3478?transport=udp", "turns:t:5349?transport=tcp"]
    assert config.turn.ttl == 600 and config.ice_transport_policy == "all"
    assert SECRET not in repr(config)
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text(SECRET + "\n")
    from_file = load(env={**env, "MEDSTAGE_TURN_SECRET_FILE": str(secret_file)})
    assert from_file.turn.secret == SECRET
    bad = [
        ({**env}, "turn_urls need turn_secret"),
        ({"MEDSTAGE_TURN_SECRET": SECRET}, "without turn_urls"),
        ({**env, "MEDSTAGE_TURN_SECRET": "short"}, "at least 16"),
        ({"MEDSTAGE_TURN_URLS": "http://t", "MEDSTAGE_TURN_SECRET": SECRET}, "turn_urls"),
        ({"MEDSTAGE_STUN_URLS": "turn:t"}, "stun_urls"),
        ({**env, "MEDSTAGE_TURN_SECRET": SECRET, "MEDSTAGE_TURN_TTL": "10"}, "turn_ttl"),
        ({**env, "MEDSTAGE_TURN_SECRET": SECRET, "MEDSTAGE_TURN_TTL": "999999999"}, "turn_ttl"),
        ({**env, "MEDSTAGE_TURN_SECRET_FILE": str(tmp_path / "missing")}, "no such file"),
        ({"MEDSTAGE_ICE_TRANSPORT_POLICY": "relay"}, "needs a TURN server"),
        ({"MEDSTAGE_ICE_TRANSPORT_POLICY": "none"}, "all or relay"),
    ]
    for bad_env, message in bad:
        with pytest.raises(ConfigError, match=message) as info:
            load(env=bad_env)
        assert "medstage-test-turn" not in str(info.value)


@pytest.fixture
def turn_node(tmp_path: Path):  # type: ignore[no-untyped-def]
    running = start_node(
        tmp_path,
        {
            "MEDSTAGE_TURN_URLS": "turn:127.0.0.1:3478?transport=udp,turn:127.0.0.1:3478?transport=tcp",
            "MEDSTAGE_TURN_SECRET": SECRET,
            "MEDSTAGE_TURN_TTL": "900",
            "MEDSTAGE_STUN_URLS": "stun:127.0.0.1:3478",
            "MEDSTAGE_ICE_TRANSPORT_POLICY": "relay",
        },
    )
    try:
        yield running
    finally:
        assert running.stop() == 0


async def test_joined_hands_each_participant_its_own_fresh_credential(turn_node: RunningNode) -> None:
    replies = []
    for name, role in (("Host", "host"), ("Grace", "audience"), ("Grace again", "audience")):
        async with MedstageClient(turn_node.url) as client:
            before = time.time()
            replies.append(await client.join("turn-stage", name, role, answer=False))
            after = time.time()
    for reply in replies:
        assert reply["ice_transport_policy"] == "relay"
        stun, turn = reply["ice_servers"]
        assert stun == {"urls": ["stun:127.0.0.1:3478"]}
        assert turn["urls"] == ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
        expiry, user = turn["username"].split(":")
        assert user == reply["participant"]["id"]
        assert int(before) + 900 <= int(expiry) <= int(after) + 900
        assert turn["credential"] == credential(SECRET, turn["username"])
    assert len({r["ice_servers"][1]["username"] for r in replies}) == 3, "one per participant and join"
    log = turn_node.log()
    assert SECRET not in log and replies[0]["ice_servers"][1]["credential"] not in log, "never logged"


async def test_an_allocation_outlives_its_credentials_expiry(tmp_path: Path) -> None:
    """What docs/configuration.md promises for turn_ttl: a relay allocated before the expiry keeps
    being refreshed (and gets new channels) after it, so a long talk does not lose its relayed media."""
    with coturn(tmp_path) as server:
        username = f"{int(time.time()) + 2}:p-1"
        transport, _ = await aioice.turn.create_turn_endpoint(
            asyncio.DatagramProtocol, ("127.0.0.1", server.port), username, credential(SECRET, username)
        )
        try:
            await asyncio.sleep(3.2)  # expired
            assert int(username.split(":")[0]) < time.time()
            client = next(v for v in vars(transport).values() if isinstance(v, aioice.turn.TurnClientMixin))
            refresh = aioice.stun.Message(
                message_method=aioice.stun.Method.REFRESH, message_class=aioice.stun.Class.REQUEST
            )
            refresh.attributes["LIFETIME"] = 600
            await client.request_with_retry(refresh)
            await client.channel_bind(0x4001, ("127.0.0.1", 9))
        finally:
            transport.close()
        assert "REFRESH processed, success" in server.log()
