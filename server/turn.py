"""TURN credentials for browsers: coturn's REST-API shared-secret scheme (``use-auth-secret``).

Each participant gets its own time-limited credential in ``joined`` (docs/protocol.md): the username
is ``<unix expiry>:<who>``, the password ``base64(HMAC-SHA1(secret, username))``. coturn, started
with ``--use-auth-secret --static-auth-secret <secret>``, recomputes the password from the username
and refuses it once the expiry has passed: nothing is stored on either side, and a leaked credential
is worth at most ``turn_ttl`` seconds. The secret and the credentials are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field

# coturn splits the username at the first ':' (expiry before it); the rest is for its logs only.
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
MAX_USER_CHARS = 64


def turn_user(who: str) -> str:
    """``who`` (an identity or a participant id) as coturn's user part: no ':' and bounded."""
    return _UNSAFE.sub("_", who)[:MAX_USER_CHARS] or "anonymous"


def credential(secret: str, username: str) -> str:
    """The password coturn expects for ``username``: base64(HMAC-SHA1(secret, username))."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """What the node hands browsers beside the static ``ice_servers``."""

    urls: list[str] = field(default_factory=list)  # turn:/turns: URLs; none: no TURN
    stun_urls: list[str] = field(default_factory=list)
    secret: str = field(default="", repr=False)
    ttl: int = 3600  # seconds a credential is valid from the join

    def browser_servers(self, who: str, now: float) -> list[dict[str, object]]:
        """The RTCIceServer entries for one participant joining at ``now`` (unix seconds)."""
        servers: list[dict[str, object]] = []
        if self.stun_urls:
            servers.append({"urls": list(self.stun_urls)})
        if self.urls and self.secret:
            username = f"{int(now) + self.ttl}:{turn_user(who)}"
            password = credential(self.secret, username)
            servers.append({"urls": list(self.urls), "username": username, "credential": password})
        return servers
