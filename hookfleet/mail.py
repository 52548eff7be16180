"""The optional notification e-mail: one short plain-text mail per webhook state change (the recorder),
and the one-time code that confirms a notification address (the API).

`HOOKFLEET_SMTP_URL` names the server: `smtp://host:port` (plain, e.g. a local relay),
`smtp+starttls://user:password@host:587`, or `smtps://user:password@host:465`. Mail is a courtesy
beside the operational events, which are the reliable channel: a failed send (the server, or an address or
subject the mail library refuses) fails only its outbox row, which is retried a few times with backoff and
then given up (hookfleet/stream/poison.py).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


def send_mail(smtp_url: str, sender: str, to: str, subject: str, text: str, timeout_s: float = 10.0) -> None:
    """Send one mail; raises smtplib.SMTPException / OSError on failure, ValueError / AttributeError (and
    whatever else the mail library raises) on input it refuses."""
    parts = urlsplit(smtp_url)
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    host = parts.hostname or ""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    smtp: smtplib.SMTP
    if parts.scheme == "smtps":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout_s, context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout_s)
    with smtp:
        if parts.scheme == "smtp+starttls":
            smtp.starttls(context=ssl.create_default_context())
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        smtp.send_message(message)
