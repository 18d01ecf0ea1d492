"""Readable steps to put a period's worth of feeds, entries, matches and first mentions in a
store, for the digest tests: ``data.entry("uk-mod", "Title", rules={"gcap": ["GCAP"]})``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from bot.model import FeedSource
from bot.store import Store
from bot.store.tables import entries, feeds, first_mentions, matches

# The period 2026-W48 of a "0 8 * * mon" Europe/London digest: Mon 23 Nov 08:00 GMT to
# Mon 30 Nov 08:00 GMT.
W48_START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
W48_END = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


class DigestData:
    def __init__(self, engine: Engine, feeds: Sequence[str] = ()) -> None:
        self.engine = engine
        self.store = Store(engine)
        self.names: list[str] = []
        self.keys = 0
        for name in feeds:
            self.feed(name)

    def feed(self, name: str, *, created: datetime = W48_START - timedelta(days=30)) -> int:
        self.names.append(name)
        self.store.sync_feeds(
            [FeedSource(name=n, url=f"https://{n}.example.org/feed.xml") for n in self.names],
            created)
        return self.feed_id(name)

    def feed_id(self, name: str) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(select(feeds.c.id).where(feeds.c.name == name)).scalar_one())

    def failing(self, name: str, error: str, *, failures: int = 4,
                last_success: datetime | None = W48_START + timedelta(days=2),
                polled: datetime = W48_END - timedelta(hours=1)) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(feeds).where(feeds.c.name == name).values(
                last_error=error, consecutive_failures=failures, last_success_at=last_success,
                last_polled_at=polled))

    def entry(
        self, feed: str, title: str, *, link: str | None = None, summary: str = "",
        published: datetime | None = None, seen: datetime | None = None,
        rules: Mapping[str, Sequence[str]] | None = None, lang: str = "en",
    ) -> int:
        """Store one entry seen at ``seen`` (default: published, else mid-period) and a match
        for each rule, whose hits are the given words wherever they occur in the text."""
        seen = seen or published or W48_START + timedelta(days=3)
        self.keys += 1
        with self.engine.begin() as conn:
            entry_id = int(conn.execute(entries.insert().values(
                feed_id=self.feed_id(feed), key=f"k{self.keys}", title=title, link=link,
                author=None, categories=[], summary=summary, content="", published=published,
                updated=None, language=lang, content_hash=f"h{self.keys}",
                first_seen_at=seen)).inserted_primary_key[0])
            for rule_id, words in (rules or {}).items():
                conn.execute(matches.insert().values(
                    entry_id=entry_id, rule_id=rule_id, rule_version="v1",
                    hits=hits_for(title, summary, words), matched_at=seen))
        return entry_id

    def first_mention(self, rule_id: str, member: str, entry_id: int, seen: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(first_mentions.insert().values(
                rule_id=rule_id, member=member, entry_id=entry_id, seen_at=seen))


def hits_for(title: str, summary: str, words: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for field, text in (("title", title), ("summary", summary)):
        for word in words:
            at = text.find(word)
            if at >= 0:
                out.append({"field": field, "start": at, "end": at + len(word), "term": word})
    return out
