"""Retention: entry text older than the retention period is pruned; titles, links, matches
and alerts are kept, so history, backtests of titles and the digest archive stay whole."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, update

from bot.store.repo import Store
from bot.store.tables import entries


def prune_entry_text(store: Store, *, now: datetime, keep: timedelta) -> int:
    """Blank the summary and content of entries first seen before ``now - keep``.

    Returns how many entries were pruned (already-pruned ones are not counted again).
    """
    cutoff = now - keep
    with store.engine.begin() as conn:
        result = conn.execute(
            update(entries)
            .where(and_(entries.c.first_seen_at < cutoff,
                        or_(entries.c.summary != "", entries.c.content != "")))
            .values(summary="", content="")
        )
    return int(result.rowcount)
