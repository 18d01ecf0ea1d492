"""Logging in and out (password mode); the other modes have no login page to show."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.web.app import console, field, page, posted, redirect, safe_next
from bot.web.auth import SESSION_CSRF, SESSION_USER


async def login_form(request: Request) -> Response:
    state = console(request)
    nxt = safe_next(request.query_params.get("next"))
    if state.auth.mode != "password" or request.state.user is not None:
        return redirect(nxt)
    return page(request, "login.html", next=nxt, error=None)


async def login(request: Request) -> Response:
    state = console(request)
    form = await posted(request)
    nxt = safe_next(field(form, "next"))
    if state.auth.mode != "password":
        return redirect(nxt)
    user = state.auth.verify(field(form, "username").strip(), field(form, "password"))
    if user is None:
        return page(request, "login.html", status_code=401, next=nxt,
                    error="unknown user or wrong password")
    request.session.clear()  # a new session at login: no fixation
    request.session[SESSION_USER] = user.name
    request.session.pop(SESSION_CSRF, None)
    return redirect(nxt)


async def logout(request: Request) -> Response:
    await posted(request)
    request.session.clear()
    return redirect("/login")


routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
