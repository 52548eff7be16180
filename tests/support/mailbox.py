"""A real SMTP server for tests (aiosmtpd on a free local port) and what it received."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.ports import free_port


class Mailbox:
    """What a real SMTP server (aiosmtpd) received: (envelope recipients, parsed message) per mail."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []
        self.port = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def subjects(self) -> list[str]:
        with self._lock:
            return [str(message["Subject"]) for _, message in self.messages]

    @property
    def smtp_url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    try:
        yield box
    finally:
        controller.stop()
