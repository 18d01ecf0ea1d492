"""``policybot feeds …``: the feeds in rules/feeds.yaml and their health."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from bot.app import open_app, utc_now
from bot.cli.common import (
    OutputFormat,
    Verbose,
    ago,
    escape_markup,
    guarded,
    iso,
    out,
    settings_or_exit,
)

feeds_app = typer.Typer(help="The feeds in rules/feeds.yaml and their health.",
                        no_args_is_help=True)


def feed_health(f: Any, now: datetime) -> str:
    if f.removed:
        return "removed"
    if not f.enabled:
        return "disabled"
    if f.gone:
        return "gone"
    if f.consecutive_failures:
        return "failing"
    if f.last_success_at is None:
        return "new"
    return "ok"


@feeds_app.command("list")
def feeds_list(
    failing: Annotated[
        bool, typer.Option("--failing", help="Only feeds that are failing or gone.")
    ] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = (
        OutputFormat.table),
    verbose: Verbose = False,
) -> None:
    """Show every feed: health, last success, last error, failures, next poll, entries."""
    settings = settings_or_exit(verbose, default_level="WARNING")

    def body() -> None:
        with open_app(settings) as bot:
            now = utc_now()
            feeds = bot.store.list_feeds()
            if failing:
                feeds = [f for f in feeds if feed_health(f, now) in ("failing", "gone")]
            if fmt is OutputFormat.json:
                rows = [{
                    "name": f.name, "url": f.url, "health": feed_health(f, now),
                    "interval_seconds": int(f.interval.total_seconds()),
                    "last_success_at": iso(f.last_success_at), "last_error": f.last_error,
                    "last_status": f.last_status, "consecutive_failures": f.consecutive_failures,
                    "next_poll_at": iso(f.next_poll_at), "entries": f.entry_count,
                    "tags": list(f.tags),
                } for f in feeds]
                out.print_json(json.dumps(rows, ensure_ascii=False))
                return
            table = Table(title=f"{len(feeds)} feeds", title_justify="left")
            for column in ("feed", "health", "last success", "failures", "next poll",
                           "entries", "last error"):
                table.add_column(column, overflow="fold")
            styles = {"ok": "green", "failing": "red", "gone": "red", "new": "yellow"}
            for f in feeds:
                health = feed_health(f, now)
                table.add_row(
                    f.name, f"[{styles.get(health, 'dim')}]{health}[/]",
                    ago(f.last_success_at, now), str(f.consecutive_failures),
                    ago(f.next_poll_at, now), str(f.entry_count),
                    escape_markup(f.last_error or ""),
                )
            out.print(table)

    guarded(body)
