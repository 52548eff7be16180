"""One error shape for every failure: `{"error": {"code", "message", "field"?}}`.

Every client mistake is a 4xx that names what to fix; nothing a client sends may produce a 5xx. Only
an unreachable database or broker is a 503, and a bug is a 500 whose body says nothing about internals
(the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import psycopg
import psycopg_pool
from aiohttp import web
from pydantic import ValidationError

from hookfleet.db import DatabaseUnavailable
from hookfleet.kafka import KafkaDeliveryError, KafkaUnavailable
from hookfleet.secretbox import SecretKeyError
from schemas.api import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A failure with its HTTP status, a stable machine code and a message that says how to fix it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        limit: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.limit = limit
        """The quota reached (its setting's name), for a 429."""


def not_found(what: str, ident: str) -> ApiError:
    """Unknown and other-account ids look the same: a 404 never confirms that an id exists elsewhere."""
    shown = "".join(c if c.isprintable() else "?" for c in ident[:80])
    return ApiError(404, "not_found", f"{what} {shown} not found")


def past_retention(what: str, days: int) -> ApiError:
    """410: the thing existed but its day of the delivery log was dropped (HOOKFLEET_RETENTION_DAYS)."""
    shown = "".join(c if c.isprintable() else "?" for c in what)
    return ApiError(
        410, "past_retention", f"{shown} is past the delivery log's retention of {days} days and no longer stored"
    )


def from_validation(exc: ValidationError, location: str = "") -> ApiError:
    """The first pydantic error as a 422 naming the field (or a 400 for a body that is not JSON)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        # the parser's reason and place (`lone leading surrogate in hex escape at line 1 column 95`): it
        # quotes no input, and tells the caller where to look
        reason = str(first.get("ctx", {}).get("error", ""))[:200]
        return ApiError(400, "invalid_json", f"request body is not valid JSON: {reason}" if reason else
                        "request body is not valid JSON")  # fmt: skip
    field = ".".join(str(part) for part in first["loc"]) or None
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"unknown field {field!r}"
    elif first["type"] == "missing":
        message = f"{field} is required"
    elif first["type"] == "model_type" or field is None:
        message = f"{location or 'request body'} must be a JSON object"
    else:
        message = f"{field}: {message}"
    return ApiError(422, "invalid_field", message, field)


def error_response(
    status: int, code: str, message: str, field: str | None = None, limit: str | None = None
) -> web.Response:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field, limit=limit))
    return web.Response(
        status=status, body=body.model_dump_json(exclude_none=True).encode(), content_type="application/json"
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "quota_exceeded",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.field, exc.limit)
        response.headers.update(exc.headers)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="hookfleet"'
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 404 else f"no such path {request.path[:100]}"
        response = error_response(exc.status, code, message)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (DatabaseUnavailable, psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        log.warning("event=database_unavailable path=%s error=%s", request.path, type(exc).__name__)
        return error_response(503, "unavailable", "the database is not reachable; try again shortly")
    except (KafkaUnavailable, KafkaDeliveryError, TimeoutError) as exc:
        log.warning("event=broker_unavailable path=%s error=%s", request.path, type(exc).__name__)
        return error_response(503, "unavailable", "the message broker did not acknowledge; try again shortly")
    except SecretKeyError as exc:
        # A stored secret this server's key does not open: an operator's mistake (keys differ between
        # replicas), neither the client's nor a bug.
        log.error(
            "event=webhook_secret_undecryptable path=%s reason=%r hint='give every API and dispatcher the same"
            " HOOKFLEET_SECRET_KEY'",
            request.path,
            str(exc),
        )
        return error_response(
            503,
            "secret_undecryptable",
            "this server cannot decrypt the webhook's secret: its HOOKFLEET_SECRET_KEY differs from the one that"
            " sealed it; the operator must fix the key; try again later",
        )
    except Exception:
        log.exception("event=unhandled_error method=%s path=%s", request.method, request.path)
        return error_response(500, "internal", "internal error; it has been logged")
