"""Reads for the web console: the latest matched entries (filterable), and per-rule counts.
Functions over an engine; ORM rows never leave."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, func, select

from bot.model import Entry, Hit
from bot.store.history import entry_from_row
from bot.store.tables import entries, feeds, matches


@dataclass(frozen=True, slots=True)
class MatchedRule:
    rule_id: str
    hits: tuple[Hit, ...]
    matched_at: datetime


@dataclass(frozen=True, slots=True)
class MatchedItem:
    """A stored entry with every rule that matched it, newest first in listings."""

    entry_id: int
    entry: Entry
    feed_name: str
    first_seen_at: datetime
    rules: tuple[MatchedRule, ...]

    @property
    def hits(self) -> tuple[Hit, ...]:
        return tuple(dict.fromkeys(h for r in self.rules for h in r.hits))


@dataclass(frozen=True, slots=True)
class RuleCounts:
    last_7d: int = 0
    last_30d: int = 0
    last_fired: datetime | None = None


def hits_from_json(value: Any) -> tuple[Hit, ...]:
    """Stored hits back into :class:`Hit`; anything malformed is dropped, not trusted."""
    out: list[Hit] = []
    for h in value or ():
        try:
            out.append(Hit(str(h["field"]), int(h["start"]), int(h["end"]), str(h["term"])))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(out)


def matched_items(
    engine: Engine,
    *,
    rule_ids: Sequence[str] | None = None,
    feed: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[MatchedItem]:
    """Entries that matched a rule (one of ``rule_ids`` if given), newest first."""
    wanted = select(matches.c.entry_id)
    if rule_ids is not None:
        wanted = wanted.where(matches.c.rule_id.in_(list(rule_ids)))
    query = (
        select(entries, feeds.c.name.label("feed_name"))
        .join(feeds, feeds.c.id == entries.c.feed_id)
        .where(entries.c.id.in_(wanted))
        .order_by(entries.c.first_seen_at.desc(), entries.c.id.desc())
        .limit(limit).offset(offset)
    )
    if feed:
        query = query.where(feeds.c.name == feed)
    if since is not None:
        query = query.where(entries.c.first_seen_at >= since)
    if until is not None:
        query = query.where(entries.c.first_seen_at < until)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        ids = [r.id for r in rows]
        by_entry: dict[int, list[MatchedRule]] = {}
        if ids:
            for m in conn.execute(select(matches).where(matches.c.entry_id.in_(ids))
                                  .order_by(matches.c.rule_id)):
                if rule_ids is None or m.rule_id in rule_ids:
                    by_entry.setdefault(m.entry_id, []).append(
                        MatchedRule(m.rule_id, hits_from_json(m.hits), m.matched_at))
    return [
        MatchedItem(r.id, entry_from_row(r), r.feed_name, r.first_seen_at,
                    tuple(by_entry.get(r.id, ())))
        for r in rows
    ]


def matches_of_entry(engine: Engine, entry_id: int) -> list[MatchedRule]:
    with engine.connect() as conn:
        return [MatchedRule(m.rule_id, hits_from_json(m.hits), m.matched_at)
                for m in conn.execute(select(matches).where(matches.c.entry_id == entry_id)
                                      .order_by(matches.c.rule_id))]


def rule_counts(engine: Engine, now: datetime) -> dict[str, RuleCounts]:
    """Per rule: matches in the last 7 and 30 days, and when it last fired (ever)."""
    week, month = now - timedelta(days=7), now - timedelta(days=30)
    query = select(
        matches.c.rule_id,
        func.sum(case((matches.c.matched_at >= week, 1), else_=0)),
        func.sum(case((matches.c.matched_at >= month, 1), else_=0)),
        func.max(matches.c.matched_at),
    ).group_by(matches.c.rule_id)
    with engine.connect() as conn:
        return {rid: RuleCounts(int(w or 0), int(m or 0), _aware(last))
                for rid, w, m, last in conn.execute(query)}


def _aware(value: Any) -> datetime | None:
    # func.max() loses the column's type on SQLite: the value may come back naive or a string.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
