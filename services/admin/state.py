"""What every handler needs: the service's state (built in the lifespan) and the operator who
authenticated the request."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.admin.auth import TokenVerifier
from services.admin.config import AdminConfig
from services.admin.errors import NotAuthenticated
from sms_gateway.settings import SettingsStore


@dataclass(frozen=True)
class AdminState:
    """Built in the lifespan; reaches handlers through `admin_state`."""

    config: AdminConfig
    pool: asyncpg.Pool
    settings: SettingsStore
    verifier: TokenVerifier
    known_checks: frozenset[str]


def admin_state(request: Request) -> AdminState:
    state = request.app.state.admin
    assert isinstance(state, AdminState)
    return state


# Declared for the OpenAPI "Authorize" button; the check itself is `BearerAuthMiddleware`'s.
_bearer = HTTPBearer(auto_error=False, description="an operator token of SMSGW_ADMIN_TOKENS")


async def operator(
    request: Request,
    _credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
) -> str:
    """The name of the token that authenticated this request (the audit's changed_by), as
    `BearerAuthMiddleware` found it."""
    name = getattr(request.state, "operator", None)
    if not isinstance(name, str):
        # Only reachable if the middleware is not installed: refuse rather than trust.
        raise NotAuthenticated("missing")
    return name
