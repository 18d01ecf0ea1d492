"""The Alerts page (the latest matches, filterable) and an entry with ``explain`` per rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.model import Severity, field_text
from bot.rules.explain import explain
from bot.rules.match import Document
from bot.store.console import matched_items, matches_of_entry
from bot.store.history import entry_by_id
from bot.web.app import console, page

PAGE_SIZE = 50
FIELDS = ("title", "summary", "content", "category")


def _day(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise HTTPException(400, f"{name}: expected a date such as 2026-11-01") from None


async def alerts(request: Request) -> Response:
    state = console(request)
    q = request.query_params
    rule, feed, severity = q.get("rule") or None, q.get("feed") or None, q.get("severity") or None
    since, until = _day(q.get("since"), "since"), _day(q.get("until"), "until")
    try:
        number = max(1, int(q.get("page", "1")))
    except ValueError:
        number = 1
    if severity is not None and severity not in {s.value for s in Severity}:
        raise HTTPException(400, f"severity: one of {', '.join(s.value for s in Severity)}")

    def load() -> dict[str, Any]:
        rules = state.rules_in_force()
        by_id = {r.id: r for r in rules.rules} if rules else {}
        wanted: list[str] | None = None
        if rule:
            wanted = [rule]
        if severity:
            ids = [r.id for r in by_id.values() if r.severity.value == severity]
            wanted = [i for i in (wanted or ids) if i in ids]
        items = matched_items(state.engine, rule_ids=wanted, feed=feed, since=since,
                              until=until + timedelta(days=1) if until else None,
                              limit=PAGE_SIZE + 1, offset=(number - 1) * PAGE_SIZE)
        return {"items": items[:PAGE_SIZE], "more": len(items) > PAGE_SIZE,
                "rules": by_id, "feeds": sorted(f.name for f in state.store.list_feeds())}

    data = await run_in_threadpool(load)
    return page(request, "alerts.html", **data, now=state.clock(), page=number,
                filters={"rule": rule or "", "feed": feed or "", "severity": severity or "",
                         "since": q.get("since", ""), "until": q.get("until", "")},
                severities=[s.value for s in Severity])


async def entry(request: Request) -> Response:
    state = console(request)
    entry_id = request.path_params["entry_id"]
    extra = request.query_params.get("rule")

    def load() -> dict[str, Any]:
        item = entry_by_id(state.store, entry_id)
        if item is None:
            raise HTTPException(404, f"no stored entry #{entry_id}")
        matched = matches_of_entry(state.engine, entry_id)
        rules = state.rules_in_force()
        ids = list(dict.fromkeys([m.rule_id for m in matched] + ([extra] if extra else [])))
        doc = Document(item.entry, feed_name=item.feed_name, feed_tags=item.feed_tags)
        explained = []
        for rule_id in ids:
            rule = rules.get(rule_id) if rules else None
            explained.append((rule_id, rule, explain(rule, doc) if rule else None))
        hits = tuple(h for m in matched for h in m.hits)
        fields = [(f, field_text(item.entry, f)) for f in FIELDS if field_text(item.entry, f)]
        return {"item": item, "matched": matched, "explained": explained, "hits": hits,
                "fields": fields, "all_rules": [r.id for r in rules.rules] if rules else []}

    data = await run_in_threadpool(load)
    return page(request, "entry.html", **data, now=state.clock())


routes = [
    Route("/alerts", alerts, methods=["GET"]),
    Route("/entries/{entry_id:int}", entry, methods=["GET"]),
]
