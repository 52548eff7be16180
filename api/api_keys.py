"""An account's own API keys: list them, create another, revoke one (`/v1/api-keys`).

Rolling a key without downtime: create a new one, switch the clients, revoke the old one. Revocation
is effective at once on every replica (authentication reads the key table on every request). The last
active key cannot be revoked through the API: that would lock the account out (operators can, with
`hookfleet accounts keys revoke`).
"""

from __future__ import annotations

import logging

from aiohttp import web

from api.accounts import key_hint, new_key_id
from api.auth import account_of, hash_key, new_api_key
from api.errors import ApiError, not_found
from api.operation import json_response, path_id, read_body
from api.quotas import check_count, check_rate
from api.resources import resources_of
from api.store import ApiKeyRow
from schemas.api import ApiKeyCreate, ApiKeyList, ApiKeyView, ApiKeyWithSecret

log = logging.getLogger(__name__)


def _view(row: ApiKeyRow) -> ApiKeyView:
    return ApiKeyView(
        id=row.id,
        label=row.label,
        key=row.hint,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


async def list_api_keys(request: web.Request) -> web.StreamResponse:
    rows = await resources_of(request).store.list_api_keys(account_of(request))
    return json_response(ApiKeyList(data=[_view(row) for row in rows]))


async def create_api_key(request: web.Request) -> web.StreamResponse:
    resources = resources_of(request)
    account = account_of(request)
    body = await read_body(request, ApiKeyCreate, required=False)
    check_rate(resources.create_rate, account, "creates", "HOOKFLEET_CREATES_PER_MINUTE")
    quota = resources.settings.max_api_keys_per_account
    keys = await resources.store.count_active_api_keys(account)
    check_count(keys, quota, "active API keys", "revoke one first", "HOOKFLEET_MAX_API_KEYS_PER_ACCOUNT")
    key = new_api_key()
    row = await resources.store.insert_api_key(new_key_id(), hash_key(key), account, body.label, key_hint(key))
    log.info("event=api_key_created account_id=%s key_id=%s", account, row.id)
    shown = ApiKeyWithSecret(**{**_view(row).model_dump(), "key": key})
    response = json_response(shown, 201)
    response.headers["Location"] = f"/v1/api-keys/{row.id}"
    return response


async def revoke_api_key(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    key_id = path_id(request, "key_id", "api key")
    result = await resources_of(request).store.revoke_api_key(account, key_id)
    if result == "not_found":
        raise not_found("api key", key_id)
    if result == "last_key":
        raise ApiError(409, "last_api_key", f"api key {key_id} is the account's last active key; create another first")
    log.info("event=api_key_revoked account_id=%s key_id=%s", account, key_id)
    return web.Response(status=204)
