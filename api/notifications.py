"""The account's notification settings (`/v1/account`): where webhook.failing / .recovered / .disabled
are mailed, when the operator configured SMTP (`HOOKFLEET_SMTP_URL` on the recorder). The same events
reach any webhook subscribed to them, with or without mail."""

from __future__ import annotations

import logging

from aiohttp import web

from api.auth import account_of
from api.errors import not_found
from api.operation import json_response, read_body
from api.resources import resources_of
from schemas.api import AccountUpdate, AccountView

log = logging.getLogger(__name__)


async def _view(request: web.Request) -> AccountView:
    account_id = account_of(request)
    found = await resources_of(request).store.get_account(account_id)
    if found is None:
        raise not_found("account", account_id)
    name, email = found
    return AccountView(id=account_id, name=name, notification_email=email)


async def get_account(request: web.Request) -> web.StreamResponse:
    return json_response(await _view(request))


async def update_account(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, AccountUpdate)
    if body.notification_email is not None:
        account_id = account_of(request)
        await resources_of(request).store.set_notification_email(account_id, body.notification_email or None)
        log.info("event=account_updated account_id=%s fields=notification_email", account_id)
    return json_response(await _view(request))
