"""Access tokens: JWTs (HS256) signed with one of the configured API key/secret pairs.

A token says who someone is (``sub``: the identity; ``name``), where they may go (``stage``, or
``club`` for every stage of a club), as what (``role``), what they may do (``grants``: publish,
subscribe, comment, moderate, record; by default everything their role allows) and until when
(``exp``). A platform token (``admin: true``) may use the whole HTTP API. The key that signed a token
is in its header (``kid``), so keys can be rotated: configure the new pair beside the old one.

Without configured keys the node runs in *development mode*: it signs with a built-in development key,
and ``POST /api/dev/token`` hands tokens to anyone (the browser client uses it so that
``python -m server`` works out of the box). The node says so loudly at start-up; configure
``MEDSTAGE_API_KEYS`` for anything real.

Refusals: a missing, malformed, forged, unknown-key or expired token is 401 (WebSocket close 4401);
a valid token for another stage or club, without the grant a call needs, or for a revoked identity is
403 (close 4403). Each has a ``code`` and a message that says which.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from rooms.text import bad_text_message, find_bad_text
from server.closecodes import CloseCode

GRANTS = frozenset({"publish", "subscribe", "comment", "moderate", "record"})
ROLES = ("host", "moderator", "speaker", "audience")
ROLE_GRANTS: dict[str, frozenset[str]] = {
    "host": GRANTS,
    "moderator": frozenset({"subscribe", "comment", "moderate", "record"}),
    "speaker": frozenset({"publish", "subscribe", "comment"}),
    "audience": frozenset({"publish", "subscribe", "comment"}),  # publish: once invited on stage
}
DEV_KEY = "dev"
DEV_SECRET = "medstage-development-secret-not-for-production"  # public by design: dev mode only
LEEWAY_S = 10  # clocks of the platform and the nodes may differ this much
MAX_TTL_S = 7 * 24 * 3600



class AuthError(Exception):
    status = 401
    close_code = CloseCode.UNAUTHORIZED

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Unauthorized(AuthError):
    """No valid token: missing, malformed, forged, signed by an unknown key, or expired."""


class Forbidden(AuthError):
    """A valid token that does not open this: another stage or club, a missing grant, revoked."""

    status = 403
    close_code = CloseCode.FORBIDDEN


@dataclass(frozen=True, slots=True)
class Claims:
    identity: str
    name: str | None  # None: the client's own choice (join's ``name``) is shown
    role: str | None
    stage: str | None
    club: str | None
    # None: no ``grants`` claim, so the role decides, and so do promotions on the stage (an audience
    # member the host makes a moderator moderates). A list narrows the role, promoted or not.
    grants: frozenset[str] | None
    admin: bool
    expires_at: float
    key: str

    def has(self, grant: str) -> bool:
        """For calls outside a stage (HTTP): what the token's role allows, narrowed by its grants;
        a grant list never widens a role."""
        if self.admin:
            return True
        allowed = grant in ROLE_GRANTS.get(self.role or "audience", frozenset())
        return allowed and (self.grants is None or grant in self.grants)

    def require(self, grant: str) -> None:
        if not self.has(grant):
            raise Forbidden("missing_grant", f"this token has no {grant!r} grant")

    def require_admin(self) -> None:
        if not self.admin:
            raise Forbidden("admin_required", "this call needs a platform token (admin: true)")

    def require_stage(self, stage_id: str, club_id: str | None) -> None:
        """The token opens ``stage_id``: named by it, or by the club the stage belongs to."""
        if self.admin or self.stage == stage_id or (self.club is not None and self.club == club_id):
            return
        where = f"stage {self.stage}" if self.stage else f"club {self.club}" if self.club else "no stage"
        raise Forbidden("token_wrong_stage", f"this token is for {where}, not stage {stage_id}")


def parse_keys(text: str) -> dict[str, str]:
    """``key:secret,key2:secret2`` (MEDSTAGE_API_KEYS) -> {key: secret}."""
    keys: dict[str, str] = {}
    for pair in text.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, sep, secret = pair.partition(":")
        if not sep or not key or len(secret) < 32:
            raise ValueError(
                f"api_keys: {key or pair!r}: expected key:secret with a secret of 32+ characters"
            )
        keys[key] = secret
    return keys


class Authenticator:
    def __init__(self, keys: dict[str, str], clock: Callable[[], float] = time.time) -> None:
        self.dev = not keys
        self.keys = keys or {DEV_KEY: DEV_SECRET}
        self.clock = clock

    def mint(
        self,
        identity: str,
        *,
        name: str | None = None,
        role: str | None = None,
        stage: str | None = None,
        club: str | None = None,
        grants: Iterable[str] | None = None,
        admin: bool = False,
        ttl_s: float = 3600,
        key: str | None = None,
    ) -> str:
        if role is not None and role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        grants = None if grants is None else list(grants)  # an iterable is read once
        texts = {"identity": identity, "name": name, "stage": stage, "club": club, "grants": grants}
        where = find_bad_text(texts)  # the node would refuse the token (``_claims``)
        if where is not None:
            raise ValueError(bad_text_message(where))
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be in (0, {MAX_TTL_S}]")
        key = key or next(iter(self.keys))
        now = self.clock()
        claims: dict[str, Any] = {"sub": identity, "iat": int(now), "exp": int(now + ttl_s), "iss": key}
        if name:
            claims["name"] = name
        if role:
            claims["role"] = role
        if stage:
            claims["stage"] = stage
        if club:
            claims["club"] = club
        if grants is not None:
            unknown = set(grants) - GRANTS
            if unknown:
                raise ValueError(
                    f"unknown grant {sorted(unknown)[0]!r}: grants are {', '.join(sorted(GRANTS))}"
                )
            claims["grants"] = sorted(grants)
        if admin:
            claims["admin"] = True
        return jwt.encode(claims, self.keys[key], algorithm="HS256", headers={"kid": key})

    def verify(self, token: str | None) -> Claims:
        if not token:
            raise Unauthorized(
                "token_missing", "an access token is required (docs/protocol.md, Access tokens)"
            )
        if not token.isascii():  # a JWT is base64url and dots; PyJWT would fail to encode the rest
            raise Unauthorized("token_invalid", "the access token is not a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("token_invalid", "the access token is not a JWT") from None
        key = header.get("kid")
        secret = self.keys.get(key) if isinstance(key, str) else None
        if secret is None or not isinstance(key, str):
            raise Unauthorized("token_invalid", "the access token is signed by an unknown key")
        try:
            # Expiry is checked below, once ``exp`` is known to be a number: PyJWT takes any value
            # int() accepts, so "exp": "1796000000" (a string) would pass it.
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                leeway=LEEWAY_S,
                options={"require": ["exp", "sub"], "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized("token_invalid", f"the access token is invalid: {exc}") from None
        verified = _claims(claims, key)
        if verified.expires_at <= self.clock() - LEEWAY_S:
            raise Unauthorized("token_expired", "the access token has expired")
        return verified


def _claims(raw: dict[str, Any], key: str) -> Claims:
    """The claims of a token whose signature is good: every one of the right type (docs/protocol.md,
    Tokens), or ``token_invalid``."""
    # PyJWT decodes the payload with the json module, which turns the escape "\ud800" into a lone
    # surrogate: such a name on a stage made every encoder after it fail.
    where = find_bad_text(raw)
    if where is not None:
        raise Unauthorized("token_invalid", bad_text_message(f"the token's {where!r}"))
    for date in ("exp", "iat", "nbf"):
        value = raw.get(date)
        if date in raw and not _numeric_date(value):
            raise Unauthorized("token_invalid", f"the token's {date!r} must be a number (Unix seconds)")

    def text(name: str, limit: int = 128) -> str | None:
        value = raw.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not 0 < len(value) <= limit:
            raise Unauthorized(
                "token_invalid", f"the token's {name!r} must be a string of 1-{limit} characters"
            )
        return value

    identity = text("sub")
    role = text("role")
    if role is not None and role not in ROLES:
        raise Unauthorized("token_invalid", f"the token's role must be one of {', '.join(ROLES)}")
    grants_raw = raw.get("grants")
    grants: frozenset[str] | None
    if grants_raw is None:
        grants = None
    elif isinstance(grants_raw, list) and all(isinstance(g, str) for g in grants_raw):
        unknown = set(grants_raw) - GRANTS
        if unknown:  # a misspelt grant is the platform's bug: dropping it would hide it
            shown = sorted(unknown)[0][:32]
            raise Unauthorized(
                "token_invalid",
                f"unknown grant {shown!r} in the token: grants are {', '.join(sorted(GRANTS))}",
            )
        grants = frozenset(grants_raw)
    else:
        raise Unauthorized("token_invalid", "the token's grants must be a list of strings")
    admin = raw.get("admin") is True
    return Claims(
        identity=identity or "",
        name=text("name", 64),
        role=role,
        stage=text("stage", 64),
        club=text("club", 64),
        grants=grants,
        admin=admin,
        expires_at=float(raw["exp"]),
        key=key,
    )


def _numeric_date(value: Any) -> bool:
    """A JWT NumericDate: a JSON number of seconds (not a string, not a boolean), finite and within
    what a float holds exactly."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**53
    return isinstance(value, float) and math.isfinite(value)
