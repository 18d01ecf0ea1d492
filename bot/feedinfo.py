"""Feeds for people: each feed's health row (``policybot feeds list``, the console's Feeds
page) and checking a new feed without storing it (``policybot feeds check``, the console's
"check a feed")."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.app import fetch_limits
from bot.config import Settings
from bot.errors import ConfigError
from bot.fetch import Fetcher
from bot.humanize import iso
from bot.model import FetchResult
from bot.parse import ParsedFeed, parse_feed
from bot.schedule import Health, assess, effective_interval, fresh_until, next_poll_after

DEFAULT_STALE_AFTER = timedelta(hours=48)
FAILING = ("failing", "stale", "gone")
# Response headers that decide how politely and how often a feed can be polled.
SHOWN_HEADERS = ("content-type", "etag", "last-modified", "cache-control", "expires", "age",
                 "retry-after")


def health_of(f: Any, now: datetime, stale_after: timedelta = DEFAULT_STALE_AFTER) -> Health:
    return assess(f, now, stale_after=stale_after)


def feed_health(f: Any, now: datetime, stale_after: timedelta = DEFAULT_STALE_AFTER) -> str:
    """ok | new | failing | stale | silent | gone | disabled | removed (bot.schedule.assess)."""
    return health_of(f, now, stale_after).state


def feed_row(f: Any, now: datetime, settings: Settings,
             stale_after: timedelta) -> dict[str, Any]:
    health = health_of(f, now, stale_after)
    interval = effective_interval(f.interval, f.rhythm, adaptive=settings.adaptive_interval)
    return {
        "name": f.name, "url": f.url, "declared_url": f.declared_url or f.url,
        "health": health.state, "health_reason": health.reason or None,
        "interval_seconds": int(f.interval.total_seconds()),
        "effective_interval_seconds": int(interval.total_seconds()),
        "last_success_at": iso(f.last_success_at), "last_error": f.last_error,
        "last_error_kind": f.last_error_kind, "last_status": f.last_status,
        "consecutive_failures": f.consecutive_failures,
        "failing_since": iso(f.failing_since), "next_poll_at": iso(f.next_poll_at),
        "retry_after_until": iso(f.retry_after_until),
        "last_entry_at": iso(f.last_entry_at),
        "rhythm_seconds": int(f.rhythm.total_seconds()) if f.rhythm else None,
        "redirect_url": f.redirect_url, "redirect_polls": f.redirect_polls,
        "entries": f.entry_count, "tags": list(f.tags),
    }


def fetch_and_parse(settings: Settings, url: str,
                    now: datetime) -> tuple[FetchResult, ParsedFeed]:
    """One feed fetched (with the bot's limits and address guard) and parsed, not stored.
    Raises FetchError or ParseError with the reason."""
    with Fetcher(fetch_limits(settings),
                 allow_private=settings.allow_private_addresses) as fetcher:
        fetched = fetcher.fetch(url)
    parsed = parse_feed(fetched.body or b"", url=fetched.url, headers=fetched.headers,
                        now=now, parser=settings.parser)
    return fetched, parsed


def declared_feed(settings: Settings, url: str) -> tuple[str, tuple[str, ...], timedelta]:
    """The feed's name, tags and interval if feeds.yaml declares this URL (rules can be
    scoped to them), else a placeholder name and the default interval."""
    from bot.sources import load_feeds

    try:
        sources = load_feeds(settings.rules_dir / "feeds.yaml")
    except (ConfigError, OSError):
        sources = ()
    for source in sources:
        if source.url == url:
            return source.name, source.tags, source.interval
    return "(not in feeds.yaml)", (), timedelta(minutes=30)


def entry_matches(settings: Settings, parsed: ParsedFeed, name: str,
             tags: tuple[str, ...]) -> tuple[list[list[str]], str | None]:
    from bot.rules import load_rules

    try:
        rules = load_rules(settings.rules_dir)
    except ConfigError as exc:
        return [[] for _ in parsed.entries], str(exc).splitlines()[0]
    return [[m.rule_id for m in rules.match(e, feed_name=name, feed_tags=tags)]
            for e in parsed.entries], None


def check_report(url: str, fetched: FetchResult, parsed: ParsedFeed, matches: list[list[str]],
                rules_error: str | None, interval: timedelta, now: datetime) -> dict[str, Any]:
    return {
        "url": url, "final_url": fetched.url, "permanent_redirect": fetched.permanent_url,
        "status": fetched.status, "bytes": len(fetched.body or b""),
        "encoding": parsed.encoding, "title": parsed.title, "link": parsed.link,
        "language": parsed.language, "warning": parsed.bozo,
        "headers": {h: fetched.headers[h] for h in SHOWN_HEADERS if h in fetched.headers},
        "fresh_until": iso(fresh_until(fetched.headers, now)),
        "next_poll_at": iso(next_poll_after(now, interval, fetched.headers, rng=lambda: 0.0)),
        "rules_error": rules_error,
        "entries": [{
            "key": e.key, "title": e.title, "link": e.link, "published": iso(e.published),
            "updated": iso(e.updated), "language": e.language, "rules": rules,
        } for e, rules in zip(parsed.entries, matches, strict=True)],
    }
