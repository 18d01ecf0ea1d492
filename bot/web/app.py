"""The console as a Starlette application: settings → :func:`create_app`.

Pages are server-rendered Jinja2 templates (``bot/web/templates``); the only script is the
rule editor's live preview (``static/editor.js``). Each page module (alerts, rules, feeds,
digests) holds its routes; this one holds what they share: the :class:`Console` state, who
the user is, CSRF-checked form posts, and the security headers.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot import __version__, humanize
from bot.config import Settings
from bot.digest.build import safe_link
from bot.errors import ConfigError
from bot.rules import RuleSet
from bot.store import Store, make_engine, upgrade
from bot.store.audit import AuditLog
from bot.watch import RulesHolder
from bot.web import render
from bot.web.auth import CSRF_FIELD, CSRF_HEADER, Auth, User, check_csrf, csrf_token
from bot.web.rulefiles import RuleFiles

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PUBLIC_PATHS = ("/login", "/static/")
SESSION_COOKIE = "policybot_console"
SESSION_MAX_AGE = 12 * 3600
FLASH = "flash"

# Pages load only their own CSS and script; nothing inline, nothing from elsewhere.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'; "
            "object-src 'none'")


@dataclass
class Console:
    """What every page needs: settings, the database, the rule files, who may do what."""

    settings: Settings
    engine: Engine
    store: Store
    audit: AuditLog
    files: RuleFiles
    auth: Auth
    clock: Callable[[], datetime]
    templates: Jinja2Templates
    rules: RulesHolder  # the bot's own holder under `run --web`

    @property
    def rules_dir(self) -> Path:
        return self.settings.rules_dir

    def rules_in_force(self) -> RuleSet | None:
        """The rules as the bot uses them: reloaded when a file changed, the last good set
        while a file is broken, None if they never loaded."""
        self.rules.refresh()
        try:
            return self.rules()
        except ConfigError:
            return None


def console(request: Request) -> Console:
    state: Console = request.app.state.console
    return state


def current_user(request: Request) -> User:
    user: User = request.state.user
    return user


def require_editor(request: Request) -> User:
    user = current_user(request)
    if not user.can_edit:
        raise HTTPException(403, f"{user.name} may read but not change rules or feeds "
                                 "(ask for the editor role)")
    return user


async def posted(request: Request) -> FormData:
    """The form of a POST, after checking its CSRF token (403 without a valid one)."""
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    token = sent if isinstance(sent, str) else request.headers.get(CSRF_HEADER)
    if not check_csrf(request, token):
        raise HTTPException(403, "the form's security token is missing or out of date: "
                                 "reload the page and try again")
    return form


def field(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name)
    return value if isinstance(value, str) else default


def flash(request: Request, message: str, kind: str = "ok") -> None:
    request.session[FLASH] = [kind, message]


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """Render a page with what the layout needs (the user, CSRF token, a flash message)."""
    state = console(request)
    shown = request.session.pop(FLASH, None)
    context.update(
        user=getattr(request.state, "user", None), csrf=csrf_token(request),
        flash=shown, app_version=__version__, auth_mode=state.auth.mode,
    )
    return state.templates.TemplateResponse(request, template, context, status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


class Guard:
    """Every request but the login page and static files needs a user; every response
    gets the security headers. (Pure ASGI: nothing buffered.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        path = request.url.path
        state: Console = request.app.state.console
        user = state.auth.user(request)
        scope.setdefault("state", {})["user"] = user
        if user is None and not path.startswith(PUBLIC_PATHS):
            if request.method in ("GET", "HEAD") and state.auth.mode == "password":
                target = path + (f"?{request.url.query}" if request.url.query else "")
                response: Response = redirect(f"/login?next={_quote(target)}")
            elif state.auth.mode == "header":
                response = PlainTextResponse("no user: the console expects the header "
                                             f"{state.auth.header} from its proxy", 401)
            else:
                response = PlainTextResponse("log in first", 401)
            await response(scope, receive, self._with_headers(send))
            return
        await self.app(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = {
                    b"x-content-type-options": b"nosniff",
                    b"referrer-policy": b"same-origin",
                    b"x-frame-options": b"SAMEORIGIN",
                    b"content-security-policy": PAGE_CSP.encode(),
                    b"cache-control": b"no-store",
                }
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message["headers"] = headers
            await send(message)
        return sending


def _quote(target: str) -> str:
    from urllib.parse import quote

    return quote(target, safe="/")


def safe_next(value: str | None) -> str:
    """A same-site path to go to after logging in (never another site's URL)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.autoescape = True
    # safe_link: only absolute http(s) links reach an href (never `javascript:` from a feed).
    env.filters.update(
        when=render.when, ago=humanize.ago, highlight=render.highlight, snippet=render.snippet,
        safe_link=safe_link,
    )
    return templates


def routes() -> list[BaseRoute]:
    from bot.web import alerts, digests, feeds, login, rules

    return [
        Route("/", lambda request: redirect("/alerts")),
        *login.routes, *alerts.routes, *rules.routes, *feeds.routes, *digests.routes,
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] | None = None,
    engine: Engine | None = None,
    rules: RulesHolder | None = None,
    secure_cookies: bool = False,
    migrate: bool = True,
) -> Starlette:
    """The console for ``settings``. ``secure_cookies``: send the session cookie over HTTPS
    only (``policybot web`` turns it on unless bound to loopback)."""
    from bot.app import utc_now

    auth = Auth.from_settings(settings)
    owned = engine is None
    engine = engine or make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    secret = settings.web_secret.get_secret_value() if settings.web_secret else None
    if secret is None and auth.mode == "password":
        log.warning("POLICYBOT_WEB_SECRET is not set: sessions end when the console restarts")
    state = Console(settings, engine, Store(engine), AuditLog(engine), RuleFiles(
        settings.rules_dir), auth, clock or utc_now, _templates(),
        rules or RulesHolder(settings.rules_dir))
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                state.engine.dispose()

    app = Starlette(
        lifespan=lifespan,
        routes=routes(),
        middleware=[
            Middleware(SessionMiddleware, secret_key=secret or secrets.token_urlsafe(32),
                       session_cookie=SESSION_COOKIE, max_age=SESSION_MAX_AGE,
                       same_site="lax", https_only=secure_cookies),
            Middleware(Guard),
        ],
        exception_handlers={HTTPException: _http_error},  # type: ignore[dict-item]
    )
    app.state.console = state
    return app


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if not hasattr(request.state, "user"):
        return PlainTextResponse(exc.detail, exc.status_code)
    return page(request, "error.html", status_code=exc.status_code, status=exc.status_code,
                message=exc.detail)

