"""Access tokens for tests: minted with the development key, which every node without configured API
keys accepts (server/auth.py), or with given keys for nodes that have them."""

from __future__ import annotations

import uuid
from typing import Any

from server.auth import ROLES, Authenticator

DEV = Authenticator({})


def token(
    stage: str | None,
    role: str | None = "audience",
    identity: str | None = None,
    name: str | None = None,
    *,
    keys: dict[str, str] | None = None,
    **claims: Any,
) -> str:
    """A token for ``stage`` as ``role``; a fresh identity unless one is given."""
    auth = Authenticator(keys) if keys else DEV
    return auth.mint(
        identity or "test-" + uuid.uuid4().hex[:12],
        name=name,
        role=role if role in ROLES else None,
        stage=stage,
        **claims,
    )


def admin_token(keys: dict[str, str] | None = None) -> str:
    return (Authenticator(keys) if keys else DEV).mint("platform", admin=True)


def signed(join: dict[str, Any], **claims: Any) -> dict[str, Any]:
    """A ``join`` message with the token its fields describe (stage, role, identity, name)."""
    stage = join.get("stage") if isinstance(join.get("stage"), str) else None
    return {
        **join,
        "token": token(
            stage if stage and len(stage) <= 64 else None,
            join.get("role"),
            join.get("identity"),
            join.get("name") if isinstance(join.get("name"), str) else None,
            **claims,
        ),
    }


def bearer(token_: str | None = None) -> dict[str, str]:
    """HTTP headers with a (platform, by default) token."""
    return {"Authorization": f"Bearer {token_ or admin_token()}"}
