"""What every handler needs: the service's state (built in the lifespan), the operator who
authenticated the request, and a refusal of query parameters the endpoint does not take.

`State` and `Operator` are the handlers' parameter types for the first two, defined here once for
every route module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

import asyncpg
from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.admin.auth import TokenVerifier
from services.admin.config import AdminConfig
from services.admin.errors import InvalidParameters, NotAuthenticated, UnknownQueryParameters
from services.admin.queries import SmsStatements
from sms_gateway import db
from sms_gateway.lifespan import TypedState
from sms_gateway.problems import FieldProblem
from sms_gateway.service import Supervisor
from sms_gateway.settings import SettingsStore
from sms_gateway.text import plain_text_problem


@dataclass(frozen=True)
class AdminState:
    """Built in the lifespan (`app.create_app`); reaches handlers as `State`.

    `check_names` are the registry's, in its order: what check_sequence and check_enabled may
    name, the check results an SMS shows and the columns a requeue resets (`sms_statements`).
    """

    config: AdminConfig
    pool: asyncpg.Pool
    settings: SettingsStore
    verifier: TokenVerifier
    check_names: tuple[str, ...]
    sms_statements: SmsStatements
    supervisor: Supervisor  # the settings refresher

    @property
    def known_checks(self) -> frozenset[str]:
        return frozenset(self.check_names)

    async def ready(self) -> dict[str, bool]:
        return {"database": await db.is_ready(self.pool), "background": self.supervisor.healthy}


ADMIN: Final = TypedState(AdminState)


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


State = Annotated[AdminState, Depends(ADMIN.of)]
Operator = Annotated[str, Depends(operator)]


async def known_query_parameters_only(request: Request) -> None:
    """Refuse a query parameter the endpoint does not declare: a misspelt filter
    (`?prefix=` for `?sender_prefix=`) would otherwise answer as if there were no filter.

    And refuse any path or query parameter that is not plain text (sms_gateway.text): a NUL
    reached PostgreSQL and was a 500; no key, sender or cursor holds a control character.
    Done here, for every parameter of every endpoint, rather than in each declaration."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    accepted = _declared_query_parameters(route.dependant)
    unknown = set(request.query_params) - accepted
    if unknown:
        raise UnknownQueryParameters(unknown, accepted)
    problems = [
        FieldProblem(name, why, location=place)
        for place, parameters in (
            ("path", request.path_params.items()),
            ("query", request.query_params.multi_items()),
        )
        for name, value in parameters
        if isinstance(value, str) and (why := plain_text_problem(value)) is not None
    ]
    if problems:
        raise InvalidParameters(problems)


def _declared_query_parameters(dependant: Dependant) -> set[str]:
    names = {parameter.alias for parameter in dependant.query_params}
    for sub_dependant in dependant.dependencies:
        names |= _declared_query_parameters(sub_dependant)
    return names
