"""The account's notification settings (`/v1/account`): where webhook.failing / .recovered / .disabled
are mailed, when the operator configured SMTP (`HOOKFLEET_SMTP_URL` on the recorder and the API). The same
events reach any webhook subscribed to them, with or without mail.

An address gets mail only once confirmed, so an account cannot make the fleet mail someone else's inbox:
setting it stores it unconfirmed and mails it a one-time code; `POST /v1/account/notification-email/confirm`
with that code confirms it. Only the code's SHA-256 is stored; a code lasts `CODE_TTL_S`, allows
`CODE_TRIES` wrong tries, and a new one is mailed at most every `RESEND_AFTER_S` per account.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets

from aiohttp import web

from api.auth import account_of
from api.errors import ApiError, not_found
from api.operation import json_response, read_body
from api.quotas import too_many
from api.resources import resources_of
from hookfleet.mail import send_mail
from hookfleet.stream.poison import describe_failure
from schemas.api import AccountUpdate, AccountView, NotificationEmailConfirm

log = logging.getLogger(__name__)

CODE_TTL_S = 30 * 60.0
CODE_TRIES = 5
RESEND_AFTER_S = 60.0
"""A new code (and mail) per account at most this often: the mail goes to an address not yet confirmed."""
CONFIRM_PATH = "/v1/account/notification-email/confirm"


def code_hash(code: str) -> bytes:
    """The code as stored: 72 random bits, so a plain SHA-256 cannot be reversed by trying codes."""
    return hashlib.sha256(code.encode()).digest()


def confirmation_text(code: str) -> tuple[str, str]:
    """(subject, body) of the confirmation mail."""
    minutes = int(CODE_TTL_S // 60)
    return (
        "Confirm your hookfleet notification address",
        f"Your hookfleet account asked to send webhook failure notifications to this address.\n\n"
        f"Confirmation code: {code}\n\n"
        f"Enter it on the settings page, or `hookfleet webhooks notify-email-confirm {code}`, or\n"
        f'POST {CONFIRM_PATH} {{"code": "{code}"}}, within {minutes} minutes.\n'
        "If you did not ask for this, ignore this mail: nothing is sent here unless the code is entered.\n",
    )


async def _view(request: web.Request) -> AccountView:
    account_id = account_of(request)
    found = await resources_of(request).store.get_account(account_id)
    if found is None:
        raise not_found("account", account_id)
    return AccountView(
        id=account_id,
        name=found.name,
        notification_email=found.notification_email,
        notification_email_confirmed=found.confirmed,
    )


async def get_account(request: web.Request) -> web.StreamResponse:
    return json_response(await _view(request))


async def update_account(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, AccountUpdate)
    if body.notification_email is None:
        return json_response(await _view(request))
    account_id = account_of(request)
    resources = resources_of(request)
    if not body.notification_email:
        await resources.store.clear_notification_email(account_id)
        log.info("event=account_updated account_id=%s fields=notification_email change=removed", account_id)
        return json_response(await _view(request))
    current = await resources.store.get_account(account_id)
    if current is not None and current.confirmed and current.notification_email == body.notification_email:
        return json_response(await _view(request))  # the same confirmed address: nothing to confirm again
    code = secrets.token_urlsafe(9)
    wait = await resources.store.start_confirmation(
        account_id, body.notification_email, code_hash(code), CODE_TTL_S, RESEND_AFTER_S
    )
    if wait is not None:
        raise too_many(
            f"a confirmation code was mailed less than {RESEND_AFTER_S:g} s ago; retry in {wait:.0f} s", wait
        )
    log.info("event=account_updated account_id=%s fields=notification_email change=unconfirmed", account_id)
    await _mail_code(request, account_id, body.notification_email, code)
    return json_response(await _view(request))


async def _mail_code(request: web.Request, account_id: str, address: str, code: str) -> None:
    """Mail the code; without SMTP on the API the address stays unconfirmed (and gets no mail)."""
    settings = resources_of(request).settings
    if settings.smtp_url is None:
        log.warning("event=confirmation_not_mailed account_id=%s reason=smtp_not_configured", account_id)
        return
    smtp_url = settings.smtp_url.get_secret_value()
    subject, text = confirmation_text(code)
    try:
        await asyncio.to_thread(send_mail, smtp_url, settings.smtp_from, address, subject, text)
    except Exception as exc:  # whatever the server or the mail library say: the caller may try again later
        error = describe_failure(exc, secrets=(smtp_url,))
        log.warning("event=confirmation_mail_failed account_id=%s error=%r", account_id, error)
        raise ApiError(
            503,
            "mail_unavailable",
            f"the confirmation code could not be mailed; the address is kept unconfirmed, set it again in"
            f" {RESEND_AFTER_S:g} s to get a new code",
            "notification_email",
            headers={"Retry-After": str(int(RESEND_AFTER_S))},
        ) from None
    log.info("event=confirmation_mailed account_id=%s", account_id)


_REFUSALS = {
    "wrong": (422, "this code is not the one mailed; check it, or set the address again for a new one"),
    "expired": (422, "this code has expired; set the address again for a new one"),
    "locked": (422, f"{CODE_TRIES} wrong codes: this one no longer works; set the address again for a new one"),
    "none": (409, "no confirmation is pending; set notification_email first (PATCH /v1/account)"),
}


async def confirm_notification_email(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, NotificationEmailConfirm)
    account_id = account_of(request)
    outcome = await resources_of(request).store.confirm_notification_email(account_id, code_hash(body.code), CODE_TRIES)
    if outcome != "confirmed":
        status, message = _REFUSALS[outcome]
        log.info("event=confirmation_refused account_id=%s reason=%s", account_id, outcome)
        code = "invalid_field" if status == 422 else "no_confirmation_pending"
        raise ApiError(status, code, f"code: {message}" if status == 422 else message, "code")
    log.info("event=notification_email_confirmed account_id=%s", account_id)
    return json_response(await _view(request))
