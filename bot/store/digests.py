"""What the digest reads from the store, and the claim rows that make each send happen once.

Reads (values out, no ORM rows): the matches of a period joined with their entries and
feeds, entries seen per source, feeds that were failing, tracked first mentions.
Writes: one ``digest_sends`` row per (digest, period), claimed with INSERT … ON CONFLICT DO
NOTHING (or a conditional UPDATE for a retry or ``--force``) before any mail is sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bot.model import Entry, Hit
from bot.store.db import transaction
from bot.store.tables import digest_sends, entries, feeds, first_mentions, matches

SENDING, SENT, RETRY, FAILED, SKIPPED = "sending", "sent", "retry", "failed", "skipped"


@dataclass(frozen=True, slots=True)
class MatchedEntry:
    """One (entry, rule) match of the period, with what the digest shows of the entry."""

    entry_id: int
    entry: Entry
    feed_name: str
    feed_title: str | None
    rule_id: str
    hits: tuple[Hit, ...]
    matched_at: datetime
    first_seen_at: datetime


@dataclass(frozen=True, slots=True)
class FeedProblem:
    """A feed that was failing during a period: the digest may have missed its items."""

    name: str
    title: str | None
    error: str
    failures: int
    last_success_at: datetime | None


@dataclass(frozen=True, slots=True)
class FirstMention:
    """The first entry in which a rule named a member of its ``track`` list."""

    rule_id: str
    member: str
    entry_id: int
    title: str
    link: str | None
    feed_name: str
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class SendRecord:
    """A ``digest_sends`` row."""

    id: int
    digest: str
    period_start: datetime
    period_end: datetime
    status: str
    attempts: int
    sends: int
    claimed_at: datetime | None
    lease_until: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    items: int | None
    recipients: tuple[str, ...]
    message_id: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a claim: ``record`` is the row now held (claimed) or as found."""

    claimed: bool
    record: SendRecord


class DigestStore:
    """Digest reads and send claims over one engine. Every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _begin(self) -> contextlib.AbstractContextManager[Connection]:
        return transaction(self.engine)

    # ------------------------------------------------------------------ reads

    def matches_between(
        self, start: datetime, end: datetime, rule_ids: Collection[str] | None = None
    ) -> list[MatchedEntry]:
        """Matches recorded in ``[start, end)`` (of ``rule_ids`` when given), oldest first."""
        query = (
            select(matches.c.entry_id, matches.c.rule_id, matches.c.hits, matches.c.matched_at,
                   entries, feeds.c.name.label("feed_name"), feeds.c.title.label("feed_title"))
            .join(entries, entries.c.id == matches.c.entry_id)
            .join(feeds, feeds.c.id == entries.c.feed_id)
            .where(matches.c.matched_at >= start, matches.c.matched_at < end)
            .order_by(matches.c.matched_at, matches.c.id)
        )
        if rule_ids is not None:
            if not rule_ids:
                return []
            query = query.where(matches.c.rule_id.in_(sorted(rule_ids)))
        with self._begin() as conn:
            rows = conn.execute(query).all()
        return [_matched(r) for r in rows]

    def entries_per_source(self, start: datetime, end: datetime) -> dict[str, int]:
        """Entries first seen in ``[start, end)``, by feed name."""
        with self._begin() as conn:
            rows = conn.execute(
                select(feeds.c.name, func.count(entries.c.id))
                .join(entries, entries.c.feed_id == feeds.c.id)
                .where(entries.c.first_seen_at >= start, entries.c.first_seen_at < end)
                .group_by(feeds.c.name).order_by(feeds.c.name))
            return {name: int(n) for name, n in rows}

    def failing_feeds(self, start: datetime, end: datetime) -> list[FeedProblem]:
        """Active feeds that were failing at some point of ``[start, end)``, as far as the
        feed's state tells: failing now with no success since before ``end``, or gone."""
        with self._begin() as conn:
            rows = conn.execute(
                select(feeds)
                .where(feeds.c.enabled.is_(True), feeds.c.removed_at.is_(None),
                       feeds.c.created_at < end,
                       or_(feeds.c.gone.is_(True),
                           and_(feeds.c.consecutive_failures > 0,
                                or_(feeds.c.last_success_at.is_(None),
                                    feeds.c.last_success_at < end),
                                feeds.c.last_polled_at >= start)))
                .order_by(feeds.c.name)).all()
        return [FeedProblem(r.name, r.title, r.last_error or ("gone" if r.gone else "failing"),
                            r.consecutive_failures, r.last_success_at) for r in rows]

    def first_mentions_between(
        self, start: datetime, end: datetime, rule_ids: Collection[str] | None = None
    ) -> list[FirstMention]:
        """Tracked list members first named in ``[start, end)``, oldest first."""
        query = (
            select(first_mentions.c.rule_id, first_mentions.c.member,
                   first_mentions.c.entry_id, first_mentions.c.seen_at, entries.c.title,
                   entries.c.link, feeds.c.name.label("feed_name"))
            .join(entries, entries.c.id == first_mentions.c.entry_id)
            .join(feeds, feeds.c.id == entries.c.feed_id)
            .where(first_mentions.c.seen_at >= start, first_mentions.c.seen_at < end)
            .order_by(first_mentions.c.seen_at, first_mentions.c.id)
        )
        if rule_ids is not None:
            if not rule_ids:
                return []
            query = query.where(first_mentions.c.rule_id.in_(sorted(rule_ids)))
        with self._begin() as conn:
            rows = conn.execute(query).all()
        return [FirstMention(r.rule_id, r.member, r.entry_id, r.title, r.link, r.feed_name,
                             r.seen_at) for r in rows]

    # ----------------------------------------------------------------- claims

    def _insert(self) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(digest_sends)

    def claim(
        self, digest: str, start: datetime, end: datetime, *, now: datetime,
        recipients: Sequence[str], lease: timedelta = timedelta(minutes=10),
        force: bool = False,
    ) -> Claim:
        """Claim (digest, period) for sending. A new period is claimed by inserting its row;
        an existing one only when a retry is due, or with ``force`` when no send is in
        flight. The claim commits before the caller sends anything."""
        held = {"status": SENDING, "claimed_at": now, "lease_until": now + lease,
                "attempts": digest_sends.c.attempts + 1, "recipients": list(recipients)}
        with self._begin() as conn:
            # RETURNING says whether the row is ours (rowcount is -1 here on psycopg).
            inserted = conn.execute(
                self._insert().on_conflict_do_nothing(index_elements=["digest", "period_end"])
                .values(digest=digest, period_start=start, period_end=end, status=SENDING,
                        attempts=1, sends=0, claimed_at=now, lease_until=now + lease,
                        recipients=list(recipients), created_at=now)
                .returning(digest_sends.c.id)).first()
            key = and_(digest_sends.c.digest == digest, digest_sends.c.period_end == end)
            if inserted is not None:
                return Claim(True, _record(conn.execute(select(digest_sends).where(key)).one()))
            if force:
                free = or_(digest_sends.c.status != SENDING, digest_sends.c.lease_until < now)
            else:
                free = and_(digest_sends.c.status == RETRY, digest_sends.c.next_attempt_at <= now)
            result = conn.execute(update(digest_sends).where(key, free)
                                  .values(error=None, **held))
            row = conn.execute(select(digest_sends).where(key)).one()
            return Claim(result.rowcount == 1, _record(row))

    def mark_sent(self, send_id: int, *, now: datetime, items: int, message_id: str,
                  note: str | None = None) -> None:
        """After the server's 250. ``note`` keeps a partial refusal (some recipients)."""
        with self._begin() as conn:
            conn.execute(update(digest_sends).where(digest_sends.c.id == send_id).values(
                status=SENT, sent_at=now, items=items, message_id=message_id, error=note,
                lease_until=None, next_attempt_at=None, sends=digest_sends.c.sends + 1))

    def mark_skipped(self, send_id: int, *, now: datetime) -> None:
        with self._begin() as conn:
            conn.execute(update(digest_sends).where(digest_sends.c.id == send_id).values(
                status=SKIPPED, sent_at=now, items=0, lease_until=None, error=None))

    def mark_retry(self, send_id: int, *, at: datetime, error: str) -> None:
        with self._begin() as conn:
            conn.execute(update(digest_sends).where(digest_sends.c.id == send_id).values(
                status=RETRY, next_attempt_at=at, error=error, lease_until=None))

    def mark_failed(self, send_id: int, *, error: str) -> None:
        with self._begin() as conn:
            conn.execute(update(digest_sends).where(digest_sends.c.id == send_id).values(
                status=FAILED, error=error, lease_until=None, next_attempt_at=None))

    def abandon_interrupted(self, digest: str, now: datetime, error: str) -> list[SendRecord]:
        """Sends left in ``sending`` past their lease: the process died mid-send, so whether
        the server accepted the mail is unknown. They become ``failed`` (shown in
        ``status``) rather than being mailed again unasked."""
        with self._begin() as conn:
            stale = and_(digest_sends.c.digest == digest, digest_sends.c.status == SENDING,
                         digest_sends.c.lease_until < now)
            rows = conn.execute(select(digest_sends).where(stale)).all()
            if rows:
                conn.execute(update(digest_sends).where(stale, digest_sends.c.id.in_(
                    [r.id for r in rows])).values(status=FAILED, error=error, lease_until=None))
        return [_record(r) for r in rows]

    def get(self, digest: str, end: datetime) -> SendRecord | None:
        with self._begin() as conn:
            row = conn.execute(select(digest_sends).where(
                digest_sends.c.digest == digest, digest_sends.c.period_end == end)).first()
        return _record(row) if row is not None else None

    def sends(self, digest: str | None = None, *, statuses: Collection[str] = (),
              limit: int = 50) -> list[SendRecord]:
        """Recent sends, newest period first."""
        query = select(digest_sends).order_by(digest_sends.c.period_end.desc(),
                                              digest_sends.c.id.desc()).limit(limit)
        if digest is not None:
            query = query.where(digest_sends.c.digest == digest)
        if statuses:
            query = query.where(digest_sends.c.status.in_(sorted(statuses)))
        with self._begin() as conn:
            return [_record(r) for r in conn.execute(query)]


def _matched(row: Any) -> MatchedEntry:
    entry = Entry(
        key=row.key, title=row.title, link=row.link, author=row.author,
        categories=tuple(row.categories or ()), summary=row.summary, content=row.content,
        published=row.published, updated=row.updated, language=row.language,
        content_hash=row.content_hash,
    )
    hits = tuple(Hit(h["field"], h["start"], h["end"], h["term"]) for h in row.hits or ())
    return MatchedEntry(row.entry_id, entry, row.feed_name, row.feed_title, row.rule_id, hits,
                        row.matched_at, row.first_seen_at)


def _record(row: Any) -> SendRecord:
    return SendRecord(
        id=row.id, digest=row.digest, period_start=row.period_start, period_end=row.period_end,
        status=row.status, attempts=row.attempts, sends=row.sends, claimed_at=row.claimed_at,
        lease_until=row.lease_until, next_attempt_at=row.next_attempt_at, sent_at=row.sent_at,
        items=row.items, recipients=tuple(row.recipients or ()), message_id=row.message_id,
        error=row.error,
    )
