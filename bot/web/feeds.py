"""The Feeds page (health, failing first: the data of ``policybot feeds list``), checking a
new feed (``policybot feeds check``) and adding it to feeds.yaml."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.errors import ConfigError, FeedError
from bot.feedinfo import (
    FAILING,
    check_report,
    declared_feed,
    entry_matches,
    feed_row,
    fetch_and_parse,
)
from bot.sources import load_feeds, parse_duration
from bot.web.app import console, field, flash, page, posted, redirect, require_editor
from bot.web.rulefiles import Conflict, read_text, version_of

FEED_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")


async def feeds_page(request: Request) -> Response:
    state = console(request)
    stale_after = timedelta(hours=state.settings.stale_after_hours)

    def load() -> list[dict[str, Any]]:
        now = state.clock()
        rows = [feed_row(f, now, state.settings, stale_after) for f in state.store.list_feeds()]
        return sorted(rows, key=lambda r: (r["health"] not in FAILING, r["name"]))

    rows = await run_in_threadpool(load)
    return page(request, "feeds.html", rows=rows, failing=FAILING, now=state.clock(),
                checked=None, url="", error=None)


async def check(request: Request) -> Response:
    state = console(request)
    form = await posted(request)
    url = field(form, "url").strip()
    now = state.clock()

    def run() -> dict[str, Any]:
        fetched, parsed = fetch_and_parse(state.settings, url, now)
        name, tags, interval = declared_feed(state.settings, url)
        matches, rules_error = entry_matches(state.settings, parsed, name, tags)
        report = check_report(url, fetched, parsed, matches, rules_error, interval, now)
        report["declared"] = name != "(not in feeds.yaml)"
        report["suggested_name"] = _suggest(parsed.title or url)
        return report

    try:
        checked = await run_in_threadpool(run)
        error = None
    except FeedError as exc:
        checked, error = None, str(exc)
    return page(request, "feed_check.html", url=url, checked=checked, error=error,
                status_code=200 if error is None else 422)


def _suggest(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "new-feed"


def added_text(text: str, name: str, url: str, tags: list[str], interval: str,
               language: str) -> str:
    """feeds.yaml with one more feed at the end of its list (comments kept)."""
    lines = [f"  - name: {name}", f"    url: {json.dumps(url)}"]
    if language:
        lines.append(f"    language: {json.dumps(language)}")
    if tags:
        lines.append("    tags: [" + ", ".join(json.dumps(t) for t in tags) + "]")
    lines.append(f"    interval: {interval}")
    body = text if text.endswith("\n") or not text else text + "\n"
    if not re.search(r"(?m)^feeds:", body):
        body += "feeds:\n"
    elif re.search(r"(?m)^feeds:\s*\[\]\s*$", body):
        body = re.sub(r"(?m)^feeds:\s*\[\]\s*$", "feeds:", body)
    return body + "\n".join(lines) + "\n"


async def add(request: Request) -> Response:
    state = console(request)
    user = require_editor(request)
    form = await posted(request)
    name, url = field(form, "name").strip(), field(form, "url").strip()
    tags = [t.strip() for t in field(form, "tags").split(",") if t.strip()]
    interval, language = field(form, "interval").strip() or "30m", field(form, "language").strip()
    path = state.rules_dir / "feeds.yaml"
    current = read_text(path)  # None: no feeds.yaml yet
    before = current or ""
    problems = []
    if not FEED_NAME.fullmatch(name):
        problems.append("name: lowercase letters, digits, '-', '_' and '.'")
    try:
        parse_duration(interval)
    except ValueError as exc:
        problems.append(f"interval: {exc}")
    after = added_text(before, name, url, tags, interval, language)
    if not problems:
        try:
            _validate(after, path)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        return page(request, "feed_check.html", status_code=422, url=url, checked=None,
                    error="not added: " + "; ".join(problems))
    message = field(form, "message").strip() or f"Add feed {name}"
    try:
        saved = await run_in_threadpool(lambda: state.files.write(
            path, after, expected=version_of(current),
            author_name=user.display, author_email=user.email, message=message))
    except Conflict as exc:
        return page(request, "feed_check.html", status_code=409, url=url, checked=None,
                    error=str(exc))
    await run_in_threadpool(lambda: state.audit.record(
        at=state.clock(), user=user.name, action="add-feed", subject=name,
        path=state.files.relative(path), message=message, diff=saved.diff,
        commit=saved.commit))
    flash(request, f"feed {name} added to feeds.yaml"
                   + (f"; committed {saved.commit[:10]}" if saved.commit else "")
                   + ". The running bot polls it after its next reload.")
    return redirect("/feeds")


def _validate(text: str, path: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="policybot-feeds-") as tmp:
        draft = Path(tmp) / path.name
        draft.write_text(text, encoding="utf-8")
        try:
            load_feeds(draft)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(str(draft), path.name)) from None


routes = [
    Route("/feeds", feeds_page, methods=["GET"]),
    Route("/feeds/check", check, methods=["POST"]),
    Route("/feeds/add", add, methods=["POST"]),
]
