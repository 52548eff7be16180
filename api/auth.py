"""Bearer API keys. The database holds only the SHA-256 of each key: a key is 32 random bytes, so a
plain hash is enough (no dictionary to guess from), and a leaked table authenticates nobody.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from aiohttp import web

from api.errors import ApiError, Handler
from api.resources import resources_of

KEY_PREFIX = "hfk_"
ACCOUNT = web.RequestKey("account_id", str)
"""Request-scoped key under which the authenticated account id is stored."""

PUBLIC_PATHS = frozenset({"/v1/openapi.json", "/v1/event-types"})
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


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/") or request.path in PUBLIC_PATHS:
        return await handler(request)
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise ApiError(401, "unauthorized", "send your API key as 'Authorization: Bearer <key>'")
    account = await resources_of(request).store.account_for_key(hash_key(token))
    if account is None:
        raise ApiError(401, "unauthorized", "this API key is not valid; create one with 'hookfleet accounts create'")
    request[ACCOUNT] = account
    return await handler(request)
