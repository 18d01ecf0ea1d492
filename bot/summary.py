"""Rich summaries printed by the commands."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bot.pipeline import FeedOutcome


def print_cycle(
    out: Console, outcomes: Sequence[FeedOutcome], sent: int, pending: int, failed_alerts: int
) -> None:
    """The table `policybot poll` and `policybot demo` end with."""
    polled = len(outcomes)
    not_modified = sum(1 for o in outcomes if o.result == "not_modified")
    failed = [o for o in outcomes if o.result == "failed"]
    if failed:
        table = Table(title="Feeds that failed", title_justify="left")
        table.add_column("feed")
        table.add_column("status")
        table.add_column("error", overflow="fold")
        for o in failed:
            table.add_row(o.feed, str(o.status or ""), escape(o.error or ""))
        out.print(table)
    summary = Table(title="Poll summary", title_justify="left", show_header=False)
    summary.add_column("what")
    summary.add_column("count", justify="right")
    for label, value in [
        ("feeds polled", polled), ("feeds not modified", not_modified),
        ("feeds failed", len(failed)),
        ("entries new", sum(o.new for o in outcomes)),
        ("entries changed", sum(o.changed for o in outcomes)),
        ("alerts sent", sent), ("alerts pending", pending),
        ("alerts failed", failed_alerts),
    ]:
        summary.add_row(label, str(value))
    out.print(summary)
