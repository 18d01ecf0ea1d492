"""Serving the console with uvicorn: in the foreground (``policybot web``) or on a thread
beside the bot (``policybot run --web``)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from bot.config import Settings
from bot.digest.mail import is_loopback
from bot.errors import ConfigError
from bot.httpd import parse_bind
from bot.watch import RulesHolder
from bot.web.app import create_app
from bot.web.auth import Auth, check_bind

log = logging.getLogger(__name__)


@dataclass
class WebServer:
    server: uvicorn.Server
    sock: socket.socket

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def run(self) -> None:
        self.server.run(sockets=[self.sock])


def make_server(settings: Settings, bind: str, *,
                rules: RulesHolder | None = None) -> WebServer:
    """A server listening on ``bind`` (HOST:PORT; port 0 picks a free one). Refuses a
    non-loopback address without authentication, and says why it cannot listen."""
    try:
        host, port = parse_bind(bind)
    except ConfigError:
        raise ConfigError(f"--bind: expected HOST:PORT such as 127.0.0.1:8080, got {bind!r}"
                          ) from None
    check_bind(host, Auth.from_settings(settings))
    secure = settings.web_secure_cookies
    if secure is None:
        secure = not is_loopback(host)
    app = create_app(settings, secure_cookies=secure, rules=rules)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise ConfigError(f"--bind {bind}: cannot listen there: {exc.strerror or exc}"
                          ) from None
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False,
                            proxy_headers=False)
    return WebServer(uvicorn.Server(config), sock)


@contextlib.contextmanager
def serving_in_thread(settings: Settings, bind: str, *,
                      rules: RulesHolder | None = None) -> Iterator[WebServer]:
    """The console on a thread while the block runs (``policybot run --web``, which passes
    the bot's own rules holder: one set of rules in force, one reload)."""
    web = make_server(settings, bind, rules=rules)
    thread = threading.Thread(target=web.run, name="web", daemon=True)
    thread.start()
    try:
        yield web
    finally:
        web.server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            log.warning("the web console did not stop within 10 s")
