"""Who is calling: a bearer API key, or a portal session opened from a one-time link (api/portal_sessions.py).

The database holds only the SHA-256 of each key and session credential: both are 32 random bytes, so a
plain hash is enough (no dictionary to guess from), and a leaked table authenticates nobody. What a portal
session may not do is decided here, once, for every route: it reaches its own account only, a read-only
one changes nothing, and none manages API keys or portal sessions.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from aiohttp import web

from api.errors import ApiError, Handler
from api.resources import resources_of

KEY_PREFIX = "hfk_"
SESSION_PREFIX = "hfs_"
ACCOUNT = web.RequestKey("account_id", str)
"""Request-scoped key under which the authenticated account id is stored."""


@dataclass(frozen=True, slots=True)
class Caller:
    account_id: str
    key_id: str | None
    """The API key calling; None for a portal session."""
    portal_session_id: str | None = None
    read_only: bool = False


CALLER = web.RequestKey("caller", Caller)

PUBLIC_PATHS = frozenset({"/v1/openapi.json", "/v1/event-types"})
EXCHANGE_PATH = "/v1/portal-sessions/exchange"
"""Public too (POST only): the link's token is the credential it checks."""
KEY_ONLY_PATHS = ("/v1/api-keys", "/v1/portal-sessions")
"""What a portal session never reaches: it must not mint credentials that outlive it."""
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{16,128}$")


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when absent or malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN.match(token):
        return None
    return token


def account_of(request: web.Request) -> str:
    return request[ACCOUNT]


def caller_of(request: web.Request) -> Caller:
    return request[CALLER]


def portal_refusal(caller: Caller, method: str, path: str) -> ApiError | None:
    """Why a portal session may not make this request, or None (pure: unit-tested with plain values)."""
    if caller.portal_session_id is None:
        return None
    if any(path == prefix or path.startswith(prefix + "/") for prefix in KEY_ONLY_PATHS):
        return ApiError(
            403,
            "portal_session_not_allowed",
            f"a portal session cannot use {path[:100]}: API keys and portal sessions are managed with an API key",
        )
    if caller.read_only and method not in READ_METHODS:
        return ApiError(
            403,
            "read_only_session",
            f"this portal session is read-only: {method} {path[:100]} changes something and is refused;"
            " ask for a session without read_only to make changes",
        )
    return None


async def _caller(request: web.Request, token: str) -> Caller:
    store = resources_of(request).store
    if token.startswith(SESSION_PREFIX):
        grant = await store.portal_grant(hash_key(token))
        if grant is None:
            raise ApiError(
                401, "session_ended", "this portal session has expired or was revoked; open the page again from the app"
            )
        return Caller(grant.account_id, None, grant.session_id, grant.read_only)
    found = await store.account_for_key(hash_key(token))
    if found is None:
        raise ApiError(401, "unauthorized", "this API key is not valid; create one with 'hookfleet accounts create'")
    return Caller(found[0], found[1])


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/") or request.path in PUBLIC_PATHS:
        return await handler(request)
    if request.method == "POST" and request.path == EXCHANGE_PATH:
        return await handler(request)
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise ApiError(401, "unauthorized", "send your API key as 'Authorization: Bearer <key>'")
    caller = await _caller(request, token)
    refusal = portal_refusal(caller, request.method, request.path)
    if refusal is not None:
        raise refusal
    request[CALLER] = caller
    request[ACCOUNT] = caller.account_id
    return await handler(request)
