"""The ``watch`` grant and the sealed values behind the playback page's cookie (server/auth.py)."""

from __future__ import annotations

import pytest

from server.auth import GRANTS, ROLE_GRANTS, WATCH, Authenticator, Unauthorized

KEYS = {"k1": "s" * 40, "k2": "t" * 40}


def test_watch_is_a_grant_no_role_implies() -> None:
    auth = Authenticator(KEYS)
    assert WATCH in GRANTS and all(WATCH not in grants for grants in ROLE_GRANTS.values())
    host = auth.verify(auth.mint("a", role="host", stage="s"))
    assert not host.named(WATCH) and host.has("record")
    granted = auth.verify(auth.mint("b", role="audience", stage="s", grants=[WATCH]))
    assert granted.named(WATCH) and not granted.has("comment")  # a list narrows the role as ever
    assert auth.verify(auth.mint("c", admin=True)).named(WATCH)
    with pytest.raises(ValueError, match="unknown grant"):
        auth.mint("d", stage="s", grants=["watching"])


def test_a_sealed_value_opens_its_purpose_until_it_expires() -> None:
    now = [1_796_000_000.0]
    auth = Authenticator(KEYS, clock=lambda: now[0])
    value = auth.seal("watch", {"stage": "s", "session": "x", "sub": "u"}, ttl_s=60)
    assert auth.unseal("watch", value)["sub"] == "u"
    with pytest.raises(Unauthorized) as other:
        auth.unseal("report", value)
    assert other.value.code == "token_invalid"
    now[0] += 61
    with pytest.raises(Unauthorized) as late:
        auth.unseal("watch", value)
    assert late.value.code == "token_expired"


def test_a_sealed_value_is_no_token_and_a_token_no_sealed_value() -> None:
    auth = Authenticator(KEYS)
    value = auth.seal("watch", {"sub": "u"}, ttl_s=60)
    with pytest.raises(Unauthorized):
        auth.verify(value)
    with pytest.raises(Unauthorized):
        auth.unseal("watch", auth.mint("u", stage="s"))
    rotated = Authenticator({"k3": "u" * 40})  # the key that sealed it is gone
    with pytest.raises(Unauthorized) as gone:
        rotated.unseal("watch", value)
    assert gone.value.code == "token_invalid"
    data, mac = value.split(".")
    # A character changed in the middle (the last one of base64 may carry only padding bits, which
    # a decoder ignores: changing it there changed nothing one run in a few thousand).
    def flip(text: str) -> str:
        i = len(text) // 2
        return text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]

    for bad in (f"{data}.{flip(mac)}", f"{flip(data)}.{mac}", "", "a.b.c", "é.x"):
        with pytest.raises(Unauthorized):
            auth.unseal("watch", bad)
