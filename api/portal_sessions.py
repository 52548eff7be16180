"""Portal sessions: the settings page inside the product, without an API key in the browser.

The product's backend, with its API key, asks for a session (`POST /v1/portal-sessions`) and gets a
one-time link to the settings page of its account. The link's token sits in the URL fragment (`#token=`),
which browsers never send to a server, so it reaches no access log, proxy or `Referer`; the page takes it
out of the address bar and exchanges it (`POST /v1/portal-sessions/exchange`, token in the body) for a
session credential it keeps in memory. The token is 32 random bytes and only its SHA-256 is stored (a
signature would add a key to rotate and nothing else: the single use needs the row anyway). A link opens
once, within `LINK_WINDOW_S`; the session lasts `lifetime_s` from creation, ends early when revoked or when
the key that asked for it is revoked, and stays listed for the account's audit. What a session may do is
decided in api/auth.py.
"""

from __future__ import annotations

import logging
import re
import secrets

from aiohttp import web

from api.auth import SESSION_PREFIX, caller_of, hash_key
from api.errors import ApiError, not_found
from api.operation import json_response, path_id, read_body, read_query
from api.portal_theme import theme_query
from api.resources import resources_of
from api.store import LinkRefusal, PortalSessionRow
from schemas.api import (
    PortalExchange,
    PortalSessionCreate,
    PortalSessionGrant,
    PortalSessionLink,
    PortalSessionList,
    PortalSessionQuery,
    PortalSessionView,
)
from schemas.ids import ulid

log = logging.getLogger(__name__)

LINK_PREFIX = "hfp_"
LINK_WINDOW_S = 300
"""A link is meant to be opened as soon as it is made (the product renders it into its page); five minutes
cover a slow page load, and a link seen later by someone else is worth nothing."""
PAGE_PATH = "/settings/webhooks"
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")

_REFUSALS: dict[LinkRefusal, tuple[str, str]] = {
    "unknown": ("portal_link_invalid", "this portal link is not valid; open the page again from the app"),
    "used": (
        "portal_link_used",
        "this portal link was already used (a link opens one session) and the session it opened is now ended;"
        " open the page again from the app",
    ),
    "revoked": ("portal_link_revoked", "this portal link was revoked; open the page again from the app"),
    "expired": (
        "portal_link_expired",
        f"this portal link expired (a link must be opened within {LINK_WINDOW_S // 60} minutes of being made);"
        " open the page again from the app",
    ),
}


def new_session_id() -> str:
    return "ps_" + ulid()


def page_origin(request: web.Request) -> str:
    """Where links point: HOOKFLEET_PUBLIC_URL, else the scheme and Host this request came in on."""
    configured = resources_of(request).settings.public_url
    if configured:
        return configured
    host = request.host
    if not _HOST.match(host):
        raise ApiError(
            400, "invalid_host", "the Host header is not a host name; the operator can set HOOKFLEET_PUBLIC_URL"
        )
    return f"{request.scheme}://{host}"


def _view(row: PortalSessionRow) -> PortalSessionView:
    return PortalSessionView(
        id=row.id,
        created_by_key_id=row.created_by_key_id,
        created_by_key_label=row.created_by_key_label,
        read_only=row.read_only,
        created_at=row.created_at,
        link_expires_at=row.link_expires_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
        revoked_at=row.revoked_at,
    )


async def create_portal_session(request: web.Request) -> web.StreamResponse:
    caller = caller_of(request)
    assert caller.key_id is not None, "api/auth.py refuses portal sessions here"
    body = await read_body(request, PortalSessionCreate, required=False)
    token = LINK_PREFIX + secrets.token_urlsafe(32)
    row = await resources_of(request).store.insert_portal_session(
        new_session_id(),
        caller.account_id,
        caller.key_id,
        body.read_only,
        hash_key(token),
        min(LINK_WINDOW_S, body.lifetime_s),
        body.lifetime_s,
    )
    log.info(
        "event=portal_session_created account_id=%s session_id=%s key_id=%s read_only=%s lifetime_s=%d",
        caller.account_id,
        row.id,
        caller.key_id,
        body.read_only,
        body.lifetime_s,
    )
    url = f"{page_origin(request)}{PAGE_PATH}{theme_query(body.theme)}#token={token}"
    return json_response(PortalSessionLink(**_view(row).model_dump(), url=url), 201)


async def list_portal_sessions(request: web.Request) -> web.StreamResponse:
    query = read_query(request, PortalSessionQuery)
    rows = await resources_of(request).store.list_portal_sessions(caller_of(request).account_id, query.limit)
    return json_response(PortalSessionList(data=[_view(row) for row in rows]))


async def revoke_portal_session(request: web.Request) -> web.StreamResponse:
    account = caller_of(request).account_id
    session_id = path_id(request, "session_id", "portal session")
    if not await resources_of(request).store.revoke_portal_session(account, session_id):
        raise not_found("portal session", session_id)
    log.info("event=portal_session_revoked account_id=%s session_id=%s", account, session_id)
    return web.Response(status=204)


async def exchange_portal_token(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, PortalExchange)
    session = SESSION_PREFIX + secrets.token_urlsafe(32)
    result = await resources_of(request).store.exchange_portal_token(hash_key(body.token), hash_key(session))
    if isinstance(result, str):
        code, message = _REFUSALS[result]
        log.info("event=portal_link_refused reason=%s%s", result, " action=session_ended" if result == "used" else "")
        raise ApiError(401, code, message)
    log.info("event=portal_session_opened account_id=%s session_id=%s", result.account_id, result.session_id)
    grant = PortalSessionGrant(
        session=session, session_id=result.session_id, read_only=result.read_only, expires_at=result.expires_at
    )
    return json_response(grant)
