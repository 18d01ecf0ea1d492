"""The Digests page: each digest's current and past periods, previewed as the email will look
(the HTML part, rendered by the same code that mails it, in a sandboxed frame)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from bot.digest.config import DigestConfig
from bot.digest.context import digest_context
from bot.digest.job import DigestRunner
from bot.digest.render import render_html
from bot.digest.schedule import Period, last_send, next_send, parse_period, period_ending
from bot.errors import ConfigError
from bot.web.app import console, page

PAST_PERIODS = 6
# The digest's HTML is the mail's: inline styles, no script, nothing fetched, links open
# outside the frame.
FRAME_CSP = ("sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
             "style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'")


def periods(digest: DigestConfig, now: Any) -> list[tuple[str, Period]]:
    """("current", the period in progress), then the last complete periods, newest first."""
    out: list[tuple[str, Period]] = []
    upcoming = next_send(digest, now)
    if upcoming is not None:
        out.append(("current", period_ending(digest, upcoming)))
    at = last_send(digest, now)
    while at is not None and len(out) < PAST_PERIODS + 1:
        period = period_ending(digest, at)
        out.append((period.label, period))
        at = last_send(digest, at - timedelta(seconds=1))
    return out


def _choose(digest: DigestConfig, text: str | None, now: Any) -> tuple[str, Period]:
    choices = periods(digest, now)
    if not choices:
        raise HTTPException(404, f"digest {digest.name} has no period to show")
    if not text or text == "current":
        return choices[0]
    try:
        period = parse_period(digest, text)
    except ValueError as exc:
        raise HTTPException(400, f"period: {exc}") from None
    return period.label, period


def _prepared(request: Request) -> dict[str, Any]:
    state = console(request)
    name = request.path_params["name"]
    now = state.clock()
    try:
        with digest_context(state.settings) as ctx:
            digest = next((d for d in ctx.digests if d.name == name), None)
            if digest is None:
                raise HTTPException(404, f"no digest {name} in {ctx.path.name}")
            chosen, period = _choose(digest, request.query_params.get("period"), now)
            runner = DigestRunner(store=ctx.store, rules=lambda: ctx.rules, mailer=None,
                                  sender=state.settings.smtp_from or "", clock=state.clock)
            built = runner.prepare(digest, period)
            record = ctx.store.get(digest.name, period.end)
            return {"digest": digest, "chosen": chosen, "period": period, "built": built,
                    "record": record, "choices": periods(digest, now)}
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None


async def digests_page(request: Request) -> Response:
    state = console(request)

    def load() -> dict[str, Any]:
        try:
            with digest_context(state.settings) as ctx:
                now = state.clock()
                return {"digests": [(d, next_send(d, now), periods(d, now))
                                    for d in ctx.digests], "error": None}
        except ConfigError as exc:
            return {"digests": [], "error": str(exc)}

    return page(request, "digests.html", **await run_in_threadpool(load))


async def digest_page(request: Request) -> Response:
    data = await run_in_threadpool(_prepared, request)
    return page(request, "digest.html", **data)


async def digest_html(request: Request) -> Response:
    data = await run_in_threadpool(_prepared, request)
    return HTMLResponse(render_html(data["built"]),
                        headers={"content-security-policy": FRAME_CSP})


routes = [
    Route("/digests", digests_page, methods=["GET"]),
    Route("/digests/{name}", digest_page, methods=["GET"]),
    Route("/digests/{name}/html", digest_html, methods=["GET"]),
]
