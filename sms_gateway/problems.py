"""The one error body of every HTTP service: problem details (RFC 9457).

Every refusal of the receiver and the admin service (401, 404, 408, 409, 413, 422, 503) answers

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "sms_message: must not be empty",
     "errors": [{"field": "sms_message", "rule": "must not be empty"}]}

with `Content-Type: application/problem+json`. `detail` is one human-readable sentence; `errors`
lists each field at fault and its rule (`index`: the item of a batch; `in`: where a request
parameter was, path, query or header). A refused setting adds `key` and `rule` at the top level.
Each service builds the body here and nowhere else: its error handlers, its pure ASGI refusals
(413 before the body is read) and the HTTP server's own (408 for a client that is too slow).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One reason a request is refused: where (field, item index in a batch, or the request
    part of a parameter) and the rule it breaks."""

    field: str
    rule: str
    index: int | None = None
    location: str | None = None  # path, query, header: for request parameters

    def describe(self) -> str:
        where = self.field if self.index is None else f"[{self.index}].{self.field}"
        return f"{where}: {self.rule}"

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"field": self.field, "rule": self.rule}
        if self.index is not None:
            body["index"] = self.index
        if self.location is not None:
            body["in"] = self.location
        return body


def problem_body(
    status: int,
    detail: str,
    errors: Iterable[FieldProblem] = (),
    **extensions: object,
) -> dict[str, Any]:
    """The problem details of one refusal, as JSON-ready data."""
    return {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "errors": [problem.as_json() for problem in errors],
        **extensions,
    }


def encode_problem(body: Mapping[str, Any]) -> bytes:
    """The body as bytes. `ensure_ascii` keeps any text a client sent (echoed in a rule) valid
    to encode, lone surrogates included: an answer about bad input never fails on that input."""
    return json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class ProblemResponse(JSONResponse):
    """A JSONResponse of problem details (`application/problem+json`, ASCII-safe)."""

    media_type = PROBLEM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return encode_problem(content)


def problem_response(
    status: int,
    detail: str,
    errors: Iterable[FieldProblem] = (),
    *,
    headers: Mapping[str, str] | None = None,
    **extensions: object,
) -> ProblemResponse:
    return ProblemResponse(
        problem_body(status, detail, errors, **extensions), status_code=status, headers=headers
    )


def raw_problem(
    status: int,
    detail: str,
    errors: Iterable[FieldProblem] = (),
    *,
    retry_after: int | None = None,
    **extensions: object,
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of a problem answered below the app (pure ASGI or the HTTP server);
    the connection is closed after it, since the rest of the request is not read."""
    body = encode_problem(problem_body(status, detail, errors, **extensions))
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return headers, body


def validation_problems(exc: RequestValidationError) -> list[FieldProblem]:
    """FastAPI's parameter and body validation errors, one FieldProblem each: the field is the
    location after its part (`sms_uuid`, `value`), `in` the part for a request parameter."""
    problems = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        part = location[0] if location and location[0] in _REQUEST_PARTS else None
        field = ".".join(location[1:] if part is not None else location) or "body"
        in_request = part if part != "body" else None
        problems.append(FieldProblem(field, str(error["msg"]), location=in_request))
    return problems


_REQUEST_PARTS: Final = frozenset({"path", "query", "header", "cookie", "body"})


def validation_response(exc: RequestValidationError) -> ProblemResponse:
    problems = validation_problems(exc)
    return problem_response(422, field_problems(problems), problems)


def http_exception_response(exc: StarletteHTTPException) -> ProblemResponse:
    """Starlette's and FastAPI's own refusals (an unknown path, a wrong method, a body FastAPI
    cannot parse) as problem details. A body that cannot be parsed is the request's content,
    like any other bad value: 422, as the services answer every other bad body."""
    if exc.status_code == HTTPStatus.BAD_REQUEST:
        problem = FieldProblem("body", "must be a JSON document in UTF-8")
        return problem_response(422, problem.describe(), [problem])
    return problem_response(exc.status_code, str(exc.detail), headers=exc.headers)


# ---------------------------------------------------------------------------- OpenAPI


class FieldProblemOut(BaseModel):
    field: str = Field(examples=["sms_message"])
    rule: str = Field(examples=["must not be empty"])
    index: int | None = Field(None, description="the item of a batch", examples=[3])
    in_: str | None = Field(
        None, alias="in", description="path, query or header, for a request parameter"
    )


class ProblemDetails(BaseModel):
    """The body of every error answer (RFC 9457 problem details)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Unprocessable Content",
                    "status": 422,
                    "detail": "sms_message: must not be empty",
                    "errors": [{"field": "sms_message", "rule": "must not be empty"}],
                }
            ]
        }
    )

    type: str = Field("about:blank", description="always about:blank: the status says it all")
    title: str = Field(description="the status's phrase")
    status: int
    detail: str = Field(description="what was wrong, in one sentence")
    errors: list[FieldProblemOut] = Field(
        default_factory=list, description="each field at fault and its rule"
    )
    key: str | None = Field(None, description="the setting refused (admin)")
    rule: str | None = Field(None, description="the setting's rule that was broken (admin)")


def problem_responses(
    descriptions: Mapping[int, str], headers: Mapping[int, Mapping[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for refusals: each status with the problem details schema (its
    media type is set by `document_problems`)."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status, description in descriptions.items():
        entry: dict[str, Any] = {"model": ProblemDetails, "description": description}
        if headers and status in headers:
            entry["headers"] = dict(headers[status])
        documented[status] = entry
    return documented


def document_problems(app: FastAPI) -> None:
    """Make `app`'s OpenAPI document say what it answers: every error response with a body
    (FastAPI's own 422 included) is `application/problem+json` with the ProblemDetails
    schema, and FastAPI's unused validation error schemas are gone."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        problem = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(problem.pop("$defs", {}))
        schemas["ProblemDetails"] = problem
        body = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                for status, response in operation.get("responses", {}).items():
                    if status[:1] in ("4", "5") and "content" in response:
                        response["content"] = body
                    if status == "422":
                        response["description"] = response["description"].replace(
                            "Validation Error", "the request breaks the documented schema"
                        )
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def field_problems(problems: Sequence[FieldProblem]) -> str:
    """The `detail` sentence of a list of field problems."""
    return "; ".join(problem.describe() for problem in problems)
