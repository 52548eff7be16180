"""An API operation (method, path, handler and its contract) and the request/response plumbing that makes
every handler validate the same way: bodies and query strings through the pydantic models the OpenAPI
document is generated from."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.errors import ApiError, from_validation, not_found

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    """aiohttp path syntax, which is OpenAPI's too: `/v1/webhooks/{webhook_id}`."""
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    status: int = 200
    response: type[BaseModel] | None = None
    request: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    public: bool = False
    unavailable: bool = True
    """May answer 503 (database or broker unreachable)."""
    description: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    also: tuple[tuple[int, type[BaseModel], str], ...] = ()
    """Other success answers (status, body, when), e.g. a dry run's 200 beside the 202 of the real thing."""
    """Error statuses beyond those implied by the contract (429 for a quota, 409 for a conflict)."""
    path_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    """JSON Schemas of path parameters the handler validates (a 422 names them); the others are any id."""

    @property
    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{") and part.endswith("}")]

    @property
    def error_statuses(self) -> list[int]:
        statuses = set()
        if not self.public:
            statuses.add(401)
            if self.method != "GET":
                statuses.add(403)  # a read-only portal session (api/auth.py)
        if self.path_params:
            statuses.add(404)
        if self.request is not None:
            statuses.update({400, 413, 415, 422})
        if self.query is not None:
            statuses.add(422)
        if self.unavailable:
            statuses.add(503)
        statuses.update(self.errors)
        return sorted(statuses)


_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def path_id(request: web.Request, name: str, what: str) -> str:
    """An id from the path. One that could never have been issued is simply not found (no query is made,
    so no byte of it, a NUL included, ever reaches the database)."""
    value = request.match_info[name]
    if not _ID.match(value):
        raise not_found(what, value)
    return value


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_body(request: web.Request, model: type[M], required: bool = True) -> M:
    """The JSON body as `model`; an absent body is `model()` when the operation allows that."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError(422, "invalid_field", "request body is required: a JSON object")
        try:
            return model()
        except ValidationError as exc:  # pragma: no cover - every optional body model has all defaults
            raise from_validation(exc) from None
    if not _is_json(request.content_type):
        raise ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation(exc) from None


def read_query(request: web.Request, model: type[M]) -> M:
    values: dict[str, str] = {}
    for key in request.query:
        if key in values:
            raise ApiError(422, "invalid_field", f"{key} is given more than once", key)
        values[key] = request.query[key]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise from_validation(exc, "query") from None


def json_response(body: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=body.model_dump_json(exclude_none=False).encode(), content_type="application/json"
    )
