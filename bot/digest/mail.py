"""SMTP out: one message, sent over TLS with a verified certificate, or an error that says
whether trying again can help.

- ``POLICYBOT_SMTP_SSL=true``: implicit TLS (port 465, RFC 8314).
- else ``POLICYBOT_SMTP_STARTTLS=true`` (default): STARTTLS (RFC 3207), and it fails closed:
  a server that does not offer it gets nothing, not a plaintext fallback.
- Certificates and host names are verified (``ssl.create_default_context``), against the
  system's CAs or ``POLICYBOT_SMTP_CA_FILE``.

A reply code of 5xx is permanent and 4xx transient (RFC 5321 §4.2.1); network errors are
transient; TLS and configuration problems are permanent (retrying cannot fix them). Once
the server has answered the message with 250 it is sent, whatever happens at QUIT.
"""

from __future__ import annotations

import contextlib
import ipaddress
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from bot.config import Settings
from bot.digest.config import validate_address
from bot.errors import ConfigError, DeliveryError


class MailError(DeliveryError):
    """The SMTP server refused or could not be reached; ``permanent`` says not to retry."""

    def __init__(self, message: str, *, permanent: bool, code: int | None = None) -> None:
        self.code = code
        super().__init__("email", message, permanent=permanent)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    ssl: bool = False
    ca_file: Path | None = None
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSettings:
        """The SMTP part of the settings; a ConfigError naming what is missing."""
        if not settings.smtp_host:
            raise ConfigError("POLICYBOT_SMTP_HOST: not set; the digest needs an SMTP server "
                              "(e.g. POLICYBOT_SMTP_HOST=smtp.example.org)")
        if not settings.smtp_from:
            raise ConfigError("POLICYBOT_SMTP_FROM: not set; the digest needs a sender address "
                              "(e.g. POLICYBOT_SMTP_FROM=policybot@example.org)")
        try:
            sender = validate_address(settings.smtp_from)
        except ValueError as exc:
            raise ConfigError(f"POLICYBOT_SMTP_FROM: not an email address: {exc}") from None
        ca_file = settings.smtp_ca_file
        if ca_file is not None and not Path(ca_file).is_file():
            raise ConfigError(f"POLICYBOT_SMTP_CA_FILE: no such file: {ca_file}")
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return cls(host=settings.smtp_host, port=settings.smtp_port, sender=sender,
                   username=settings.smtp_username or None, password=password,
                   starttls=settings.smtp_starttls, ssl=settings.smtp_ssl,
                   ca_file=Path(ca_file) if ca_file is not None else None)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Delivered:
    """The server accepted the message; ``refused`` lists recipients it turned down."""

    refused: dict[str, str] = field(default_factory=dict)


class Mailer(Protocol):
    def send(self, message: EmailMessage, recipients: Sequence[str]) -> Delivered: ...


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): a host only this machine
    reaches (plain SMTP to it is allowed; the web console may serve it without logins)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
        else str(exc.smtp_error)
    return f"{exc.smtp_code} {' '.join(text.split())}"


class SmtpMailer:
    """Sends through the configured server; one connection per message."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def tls_context(self) -> ssl.SSLContext:
        ca = self.settings.ca_file
        return ssl.create_default_context(cafile=str(ca) if ca else None)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        # EHLO with the host name, not socket.getfqdn() (a reverse lookup that can hang).
        local = socket.gethostname() or "localhost"
        if s.ssl:
            return smtplib.SMTP_SSL(s.host, s.port, local_hostname=local, timeout=s.timeout,
                                    context=self.tls_context())
        return smtplib.SMTP(s.host, s.port, local_hostname=local, timeout=s.timeout)

    def send(self, message: EmailMessage, recipients: Sequence[str]) -> Delivered:
        s = self.settings
        try:
            client = self._connect()
        except ssl.SSLCertVerificationError as exc:
            raise self._cert_error(exc) from exc
        except ssl.SSLError as exc:
            raise MailError(f"{s.where}: TLS failed: {exc.reason or exc}", permanent=True) from exc
        except smtplib.SMTPResponseException as exc:
            raise self._reply_error(exc) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(f"{s.where}: cannot connect: {exc}", permanent=False) from exc
        try:
            refused = self._session(client, message, recipients)
        finally:
            # The message is sent once the server said 250 to it: a failed QUIT changes nothing.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()
            client.close()
        return Delivered({k: f"{code} {msg.decode('utf-8', 'replace')}"
                          for k, (code, msg) in refused.items()})

    def _session(self, client: smtplib.SMTP, message: EmailMessage,
                 recipients: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        s = self.settings
        try:
            client.ehlo()
            if not s.ssl and s.starttls:
                if not client.has_extn("starttls"):
                    raise MailError(
                        f"{s.where}: the server does not offer STARTTLS; refusing to send in "
                        "plaintext (set POLICYBOT_SMTP_SSL=true for port 465, or "
                        "POLICYBOT_SMTP_STARTTLS=false for a trusted local relay only)",
                        permanent=True)
                client.starttls(context=self.tls_context())
                client.ehlo()
            if s.username:
                if not (s.ssl or s.starttls) and not is_loopback(s.host):
                    raise MailError(f"{s.where}: refusing to send the SMTP password without "
                                    "TLS; enable POLICYBOT_SMTP_STARTTLS or _SSL",
                                    permanent=True)
                client.login(s.username, s.password or "")
            return client.send_message(message, from_addr=s.sender, to_addrs=list(recipients))
        except MailError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise self._cert_error(exc) from exc
        except ssl.SSLError as exc:
            raise MailError(f"{s.where}: TLS failed: {exc.reason or exc}", permanent=True) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            replies = {addr: f"{code} {msg.decode('utf-8', 'replace')}"
                       for addr, (code, msg) in exc.recipients.items()}
            permanent = all(code >= 500 for code, _ in exc.recipients.values())
            detail = "; ".join(f"{a}: {r}" for a, r in replies.items())
            raise MailError(f"{s.where}: every recipient refused: {detail}",
                            permanent=permanent) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise MailError(f"{s.where}: {exc}", permanent=True) from exc
        except smtplib.SMTPResponseException as exc:
            raise self._reply_error(exc) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(f"{s.where}: {type(exc).__name__}: {exc}", permanent=False) from exc

    def _reply_error(self, exc: smtplib.SMTPResponseException) -> MailError:
        what = "login refused" if isinstance(exc, smtplib.SMTPAuthenticationError) else "refused"
        return MailError(f"{self.settings.where}: {what}: {_reply(exc)}",
                         permanent=exc.smtp_code >= 500, code=exc.smtp_code)

    def _cert_error(self, exc: ssl.SSLCertVerificationError) -> MailError:
        hint = ("; set POLICYBOT_SMTP_CA_FILE to trust a private CA"
                if self.settings.ca_file is None else "")
        return MailError(f"{self.settings.where}: certificate not trusted: "
                         f"{exc.verify_message or exc}{hint}", permanent=True)
