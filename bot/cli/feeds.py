"""``policybot feeds …``: the feeds in rules/feeds.yaml, their health, and tools for a new
source (``check`` fetches and parses one without storing; ``discover`` lists what a web page
advertises)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from bot.app import fetch_limits, open_app, utc_now
from bot.cli.common import (
    OutputFormat,
    Verbose,
    escape_markup,
    guarded,
    out,
    settings_or_exit,
)
from bot.errors import ConfigError, ParseError
from bot.feedinfo import (
    FAILING,
    SHOWN_HEADERS,
    check_report,
    declared_feed,
    entry_matches,
    feed_health,
    feed_row,
    fetch_and_parse,
)
from bot.fetch import Fetcher
from bot.humanize import ago
from bot.model import FetchResult
from bot.parse import ParsedFeed, feed_links, parse_feed
from bot.schedule import next_poll_after

feeds_app = typer.Typer(help="The feeds in rules/feeds.yaml and their health.",
                        no_args_is_help=True)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds // 60}m" if seconds >= 60 else f"{seconds}s"


@feeds_app.command("list")
def feeds_list(
    failing: Annotated[
        bool, typer.Option("--failing", help="Only feeds that are failing, stale or gone.")
    ] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = (
        OutputFormat.table),
    verbose: Verbose = False,
) -> None:
    """Show every feed: status, last success, last error, failures, next poll, effective
    interval, entries stored.

    Status is ok, new, failing, stale (failing longer than POLICYBOT_STALE_AFTER_HOURS),
    silent (nothing new for far longer than its usual rhythm), gone (410), disabled or
    removed.
    """
    settings = settings_or_exit(verbose, default_level="WARNING")
    stale_after = timedelta(hours=settings.stale_after_hours)

    def body() -> None:
        with open_app(settings) as bot:
            now = utc_now()
            feeds = bot.store.list_feeds()
            if failing:
                feeds = [f for f in feeds if feed_health(f, now, stale_after) in FAILING]
            rows = [feed_row(f, now, settings, stale_after) for f in feeds]
            if fmt is OutputFormat.json:
                out.print_json(json.dumps(rows, ensure_ascii=False))
                return
            table = Table(title=f"{len(feeds)} feeds", title_justify="left")
            for column in ("feed", "status", "last success", "failures", "next poll",
                           "interval", "entries", "last error / note"):
                table.add_column(column, overflow="fold")
            styles = {"ok": "green", "failing": "red", "stale": "red", "gone": "red",
                      "silent": "yellow", "new": "yellow"}
            for f, row in zip(feeds, rows, strict=True):
                note = f.last_error or row["health_reason"] or ""
                if f.declared_url and f.url != f.declared_url:
                    note = (note + "; " if note else "") + (
                        f"moved permanently to {f.url}: update feeds.yaml")
                health = row["health"]
                table.add_row(
                    f.name, f"[{styles.get(health, 'dim')}]{health}[/]",
                    ago(f.last_success_at, now), str(f.consecutive_failures),
                    ago(f.next_poll_at, now),
                    _span(timedelta(seconds=row["effective_interval_seconds"])),
                    str(f.entry_count), escape_markup(note),
                )
            out.print(table)

    guarded(body)


@feeds_app.command("enable")
def feeds_enable(
    name: Annotated[str, typer.Argument(help="The feed's name in feeds.yaml.")],
    verbose: Verbose = False,
) -> None:
    """Poll a feed again after a 410 Gone (or a long Retry-After): it is due at the next
    cycle. Its failure history stays until a poll succeeds."""
    settings = settings_or_exit(verbose, default_level="WARNING")

    def body() -> None:
        with open_app(settings) as bot:
            if not bot.store.revive_feed(name, utc_now()):
                raise ConfigError(f"no feed named {name!r} in "
                                  f"{settings.rules_dir / 'feeds.yaml'}")
            out.print(f"{name}: enabled; it is polled at the next cycle")

    guarded(body)


@feeds_app.command("check")
def feeds_check(
    url: Annotated[str, typer.Argument(help="The feed's URL.")],
    fmt: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = (
        OutputFormat.table),
    verbose: Verbose = False,
) -> None:
    """Fetch and parse one feed without storing anything: its title, entries, the headers
    that matter (ETag, Last-Modified, Cache-Control) and which rules each entry would match.

    Run it on a new source before adding it to feeds.yaml. Exits 1, with the reason, when
    the feed cannot be fetched or is not a feed (an HTML page names the feed it advertises).
    """
    settings = settings_or_exit(verbose, default_level="WARNING")

    def body() -> None:
        now = utc_now()
        fetched, parsed = fetch_and_parse(settings, url, now)
        name, tags, interval = declared_feed(settings, url)
        matches, rules_error = entry_matches(settings, parsed, name, tags)
        if fmt is OutputFormat.json:
            out.print_json(json.dumps(check_report(url, fetched, parsed, matches, rules_error,
                                                  interval, now), ensure_ascii=False))
            return
        _print_check(url, fetched, parsed, matches, rules_error, interval, now)

    guarded(body)


def _print_check(url: str, fetched: FetchResult, parsed: ParsedFeed,
                 matches: list[list[str]], rules_error: str | None, interval: timedelta,
                 now: datetime) -> None:
    def line(label: str, value: str) -> None:
        out.print(f"[bold]{label}:[/] {escape_markup(value)}", highlight=False, soft_wrap=True)

    line("feed", parsed.title or "(no title)")
    line("url", fetched.url)
    if fetched.url != url:
        kind = "permanently" if fetched.permanent_url == fetched.url else "temporarily"
        line("redirected", f"{kind} from {url}"
             + (" (update feeds.yaml to the new URL)" if kind == "permanently" else ""))
    line("answer", f"HTTP {fetched.status}, {len(fetched.body or b'')} bytes, "
                   f"decoded as {parsed.encoding}, language {parsed.language or 'undeclared'}")
    for name in SHOWN_HEADERS:
        if name in fetched.headers:
            line(name, fetched.headers[name])
    for missing, why in (("etag", "no ETag"), ("last-modified", "no Last-Modified")):
        if missing not in fetched.headers:
            line("note", f"{why}: every poll downloads the whole feed")
    soonest = next_poll_after(now, interval, fetched.headers, rng=lambda: 0.0)
    line("next poll", f"{ago(soonest, now)} (interval {_span(interval)}, and what the "
                      "server's caching headers allow)")
    if parsed.bozo:
        line("warning", f"malformed but readable: {parsed.bozo}")
    if rules_error:
        line("rules", f"not matched: the rules do not load: {rules_error}")
    table = Table(title=f"{len(parsed.entries)} entries", title_justify="left")
    for column in ("published", "title", "link", "rules"):
        table.add_column(column, overflow="fold")
    for entry, rules in zip(parsed.entries, matches, strict=True):
        when = entry.published or entry.updated
        table.add_row(when.strftime("%Y-%m-%d %H:%M") if when else "undated",
                      escape_markup(entry.title or "(no title)"),
                      escape_markup(entry.link or ""), escape_markup(", ".join(rules) or "-"))
    out.print(table)
    matched = sum(1 for rules in matches if rules)
    out.print(f"{matched} of {len(parsed.entries)} entries match a rule", highlight=False)


@feeds_app.command("discover")
def feeds_discover(
    url: Annotated[str, typer.Argument(help="A web page (a site's home or news page).")],
    fmt: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = (
        OutputFormat.table),
    verbose: Verbose = False,
) -> None:
    """List the feeds a web page advertises (<link rel="alternate"> RSS, Atom, RDF, JSON Feed).

    If the URL is itself a feed, says so. Exits 1 when the page advertises none.
    """
    settings = settings_or_exit(verbose, default_level="WARNING")

    def body() -> None:
        with Fetcher(fetch_limits(settings),
                     allow_private=settings.allow_private_addresses) as fetcher:
            fetched = fetcher.fetch(url)
        page = fetched.body or b""
        try:
            parsed = parse_feed(page, url=fetched.url, headers=fetched.headers)
        except ParseError:
            parsed = None
        if parsed is not None:
            found = [{"url": fetched.url, "kind": "this URL is a feed",
                      "title": parsed.title}]
        else:
            from bot.charset import decode_document

            text = decode_document(page, fetched.headers).text
            found = [{"url": link.url, "kind": link.kind, "title": link.title}
                     for link in feed_links(text, fetched.url)]
        if fmt is OutputFormat.json:
            out.print_json(json.dumps(found, ensure_ascii=False))
        else:
            for item in found:
                title = f" — {item['title']}" if item["title"] else ""
                out.print(escape_markup(f"{item['url']}  ({item['kind']}){title}"),
                          highlight=False, soft_wrap=True)
        if not found:
            raise ParseError(url, "the page advertises no feed (no <link rel=\"alternate\" "
                                  "type=\"application/rss+xml\"> or Atom link)")

    guarded(body)
