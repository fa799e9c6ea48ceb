"""Bearer-token authentication of operators (SPEC §7, §10).

The presented token is compared with every configured token, always all of them, in constant
time, so that neither the timing nor the work done tells which token (if any) came close. Both
sides are hashed first: `hmac.compare_digest` takes time proportional to its inputs and would
otherwise reveal a token's length.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Final, NoReturn

from prometheus_client import Counter
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.admin.errors import NotAuthenticated

logger = logging.getLogger(__name__)

AUTH_FAILURES = Counter(
    "sms_admin_auth_failures_total",
    "Admin requests refused for a missing, malformed or unknown bearer token.",
    ["reason"],
)
SCHEME: Final = "bearer"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenVerifier:
    """Knows the configured operator tokens and says whose a presented token is."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        if not tokens:
            raise ValueError("at least one admin token is required")
        self._digests = tuple((name, _digest(token)) for name, token in tokens.items())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._digests)

    def operator_of(self, token: str) -> str | None:
        """The name of the token, or None. Every configured token is compared, every time."""
        presented = _digest(token)
        operator: str | None = None
        for name, digest in self._digests:
            if hmac.compare_digest(presented, digest):
                operator = name
        return operator

    def authenticate(self, authorization: str | None, *, path: str, client: str | None) -> str:
        """The operator named by an `Authorization: Bearer <token>` header, or NotAuthenticated.

        The refusal is logged with the path and client, never with the header.
        """
        if not authorization:
            self._refuse("missing", path, client)
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != SCHEME or not token:
            self._refuse("malformed", path, client)
        operator = self.operator_of(token)
        if operator is None:
            self._refuse("unknown", path, client)
        return operator

    @staticmethod
    def _refuse(reason: str, path: str, client: str | None) -> NoReturn:
        AUTH_FAILURES.labels(reason=reason).inc()
        logger.warning(
            "refused an admin request without a valid token",
            extra={"reason": reason, "path": path, "client": client},
        )
        raise NotAuthenticated(reason)


class BearerAuthMiddleware:
    """Refuses every request without a valid operator token before it reaches routing, so that
    no endpoint (nor the 404 of an unknown path, nor a 422 of a malformed body) answers a
    caller who has not authenticated. `public_paths` are answered without a token. The
    operator's name goes to `request.state.operator`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier,
        public_paths: frozenset[str],
        refuse: Callable[[NotAuthenticated], Response],
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.public_paths = public_paths
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization")
        client = scope.get("client")
        try:
            name = self.verifier.authenticate(
                authorization, path=scope["path"], client=client[0] if client else None
            )
        except NotAuthenticated as refused:
            await self.refuse(refused)(scope, receive, send)
            return
        scope.setdefault("state", {})["operator"] = name
        await self.app(scope, receive, send)
