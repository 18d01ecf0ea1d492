"""A real SMTP server on loopback (aiosmtpd) with readable knobs: STARTTLS with a certificate
from a test CA, AUTH, and scripted replies to DATA (``server.reply("451 try later")``)."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool


@dataclass
class Handler:
    received: list[Received] = field(default_factory=list)
    mail_commands: int = 0
    replies: list[str] = field(default_factory=list)  # scripted DATA replies, used in order

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        self.mail_commands += 1
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.replies:
            return self.replies.pop(0)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message,
                                      session.ssl is not None))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopbackCA:
    """A certificate authority made for one test run; the client trusts ``ca_file``."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = directory / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self, *hostnames: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*hostnames).configure_cert(context)
        return context


class SmtpServer:
    """``with SmtpServer(tls=ctx) as server:`` — STARTTLS offered (and required) when a TLS
    context is given; AUTH with ``users`` (only after TLS, as aiosmtpd insists)."""

    def __init__(self, *, tls: ssl.SSLContext | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.handler = Handler()
        self.port = free_port()
        self.users = users or {}
        kwargs: dict[str, Any] = {}
        if tls is not None:
            kwargs.update(tls_context=tls, require_starttls=True)
        if users:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     **kwargs)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        ok = (isinstance(data, LoginPassword)
              and self.users.get(data.login.decode()) == data.password.decode())
        return AuthResult(success=ok, handled=False)

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def mail_commands(self) -> int:
        return self.handler.mail_commands

    def reply(self, *replies: str) -> None:
        self.handler.replies.extend(replies)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

