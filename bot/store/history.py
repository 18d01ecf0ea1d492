"""Reads of stored entries for the analysts' tools: ``rules explain --entry/--url`` and
``rules backtest``. Functions over a :class:`~bot.store.repo.Store`; ORM rows never leave."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from bot.model import Entry
from bot.store.repo import Store
from bot.store.tables import entries, feeds

BATCH = 500


@dataclass(frozen=True, slots=True)
class StoredItem:
    """A stored entry with the feed it came from (rules scope by feed name and tags)."""

    id: int
    entry: Entry
    feed_name: str
    feed_tags: tuple[str, ...]
    first_seen_at: datetime


def _columns() -> list[Any]:
    return [entries, feeds.c.name.label("feed_name"), feeds.c.tags.label("feed_tags")]


def entry_from_row(row: Any) -> Entry:
    """An :class:`Entry` from a row of ``entries``."""
    return Entry(
        key=row.key, title=row.title, link=row.link, author=row.author,
        categories=tuple(row.categories or ()), summary=row.summary, content=row.content,
        published=row.published, updated=row.updated, language=row.language,
        content_hash=row.content_hash,
    )


def _item(row: Any) -> StoredItem:
    return StoredItem(row.id, entry_from_row(row), row.feed_name, tuple(row.feed_tags or ()),
                      row.first_seen_at)


def entry_by_id(store: Store, entry_id: int) -> StoredItem | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(*_columns()).join(feeds, feeds.c.id == entries.c.feed_id)
                           .where(entries.c.id == entry_id)).first()
    return None if row is None else _item(row)


def entry_by_link(store: Store, link: str) -> StoredItem | None:
    """The most recently seen entry with this link."""
    with store.engine.connect() as conn:
        row = conn.execute(select(*_columns()).join(feeds, feeds.c.id == entries.c.feed_id)
                           .where(entries.c.link == link)
                           .order_by(entries.c.first_seen_at.desc(), entries.c.id.desc())
                           ).first()
    return None if row is None else _item(row)


def count_entries_since(store: Store, since: datetime) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(entries)
                                .where(entries.c.first_seen_at >= since)).scalar_one())


def entries_since(store: Store, since: datetime) -> Iterator[StoredItem]:
    """Entries first seen at or after ``since``, oldest first, read in batches (keyset
    pagination on the id, so memory stays flat over any history)."""
    last = 0
    while True:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(*_columns()).join(feeds, feeds.c.id == entries.c.feed_id)
                .where(entries.c.first_seen_at >= since, entries.c.id > last)
                .order_by(entries.c.id).limit(BATCH)).all()
        if not rows:
            return
        for row in rows:
            yield _item(row)
        last = rows[-1].id
