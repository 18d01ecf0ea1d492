"""Reads and writes of the database. ORM/Core rows never leave this module: callers get and
give the frozen values of ``bot.model`` and the small records defined here."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bot.errors import StorageError
from bot.model import AlertRule, Entry, FeedSource, Hit, Match
from bot.plan import PlannedReply, PlannedUpdate
from bot.store.db import insert_rows, transaction
from bot.store.digests import DigestStore, FirstMention
from bot.store.outbox import OutboxRepo, Written, alert_key
from bot.store.tables import alerts, entries, feeds, first_mentions, matches

log = logging.getLogger(__name__)

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"


@dataclass(frozen=True, slots=True)
class FeedState:
    """A feed as the store knows it: its source declaration plus its polling state."""

    id: int
    name: str
    url: str
    interval: timedelta
    tags: tuple[str, ...]
    language: str | None
    enabled: bool
    removed: bool
    gone: bool
    etag: str | None
    last_modified: str | None
    next_poll_at: datetime
    retry_after_until: datetime | None
    last_polled_at: datetime | None
    last_success_at: datetime | None
    first_success_at: datetime | None
    last_status: int | None
    last_error: str | None
    last_error_kind: str | None
    consecutive_failures: int
    title: str | None
    entry_count: int = 0
    # Feed health (issue 5): see bot.schedule.assess.
    declared_url: str | None = None
    redirect_url: str | None = None
    redirect_polls: int = 0
    failing_since: datetime | None = None
    rhythm: timedelta | None = None
    last_entry_at: datetime | None = None
    announced_state: str | None = None


@dataclass(frozen=True, slots=True)
class SyncReport:
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredEntry:
    id: int
    content_hash: str


@dataclass(frozen=True, slots=True)
class EntryWrite:
    """An entry to insert (``entry_id`` None) or update, with its current matches."""

    entry: Entry
    entry_id: int | None
    matches: tuple[Match, ...]
    tracked: tuple[tuple[str, str], ...] = ()  # (rule id, list member) for `track: LIST`


@dataclass(frozen=True, slots=True)
class AlertWrite:
    entry_key: str
    channel: str
    rules: tuple[AlertRule, ...]
    hits: tuple[Hit, ...]


@dataclass(frozen=True, slots=True)
class FeedUpdate:
    """The feed's new state after a poll. Written in the same transaction as its entries."""

    polled_at: datetime
    next_poll_at: datetime
    status: int | None
    etag: str | None = None
    last_modified: str | None = None
    title: str | None = None
    success: bool = True
    error: str | None = None
    error_kind: str | None = None
    retry_after_until: datetime | None = None
    keep_validators: bool = False
    gone: bool = False
    # Issue 5: permanent-redirect watch, adopted URL, publishing rhythm (success only).
    redirect_url: str | None = None
    redirect_polls: int = 0
    adopt_url: str | None = None
    rhythm: timedelta | None = None
    last_entry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PollWrite:
    feed_id: int
    now: datetime
    entries: tuple[EntryWrite, ...] = ()
    alerts: tuple[AlertWrite, ...] = ()
    feed: FeedUpdate | None = None
    replies: tuple[PlannedReply, ...] = ()  # thread replies and updates (bot.plan, issue 4)
    updates: tuple[PlannedUpdate, ...] = ()


@dataclass(frozen=True, slots=True)
class PollSaved:
    new_entries: int
    changed_entries: int
    alerts: int
    # This poll's first alerts and duplicate replies: what the poller files in its story
    # index instead of reading them back (issue 7).
    reports: tuple[Written, ...] = ()


class Store(OutboxRepo):
    """Repository over one engine. Every method is one transaction. The outbox's methods
    (claim, mark, requeue, counts) are in ``bot/store/outbox.py``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._unit = threading.local()  # this thread's open unit of work, if any

    def _begin(self) -> contextlib.AbstractContextManager[Connection]:
        held: _Unit | None = getattr(self._unit, "open", None)
        return held.join() if held is not None else transaction(self.engine)

    @contextlib.contextmanager
    def unit(self) -> Iterator[None]:
        """Run this thread's store calls in one transaction, committed at the end: several
        feeds' polls, each still all or nothing (a call that fails makes the whole unit roll
        back, whatever catches its error). The poller uses it on SQLite only, where a commit
        is an fsync and no other process writes (DESIGN.md, Scale); nothing is visible to
        other connections (the delivery loop) before the unit commits."""
        if getattr(self._unit, "open", None) is not None:
            yield  # already in one
            return
        with transaction(self.engine) as conn:
            unit = _Unit(conn)
            self._unit.open = unit
            try:
                yield
                if unit.failed:
                    raise StorageError("a store call failed inside a unit of work: rolled back")
            finally:
                self._unit.open = None

    def _insert(self, table: Any) -> Any:
        """INSERT … ON CONFLICT DO NOTHING for the engine's dialect."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    def ping(self) -> None:
        """Raises StorageError unless the database answers."""
        with self._begin() as conn:
            conn.execute(select(1))

    # ------------------------------------------------------------------ feeds

    def sync_feeds(self, sources: Sequence[FeedSource], now: datetime) -> SyncReport:
        """Make the feeds table follow feeds.yaml: add, update, and mark removed (history kept)."""
        added: list[str] = []
        updated: list[str] = []
        removed: list[str] = []
        with self._begin() as conn:
            rows = {r.name: r for r in conn.execute(select(feeds))}
            for source in sources:
                declared = {
                    "declared_url": source.url,
                    "interval_seconds": int(source.interval.total_seconds()),
                    "tags": list(source.tags),
                    "language": source.language,
                    "enabled": source.enabled,
                }
                row = rows.get(source.name)
                if row is None:
                    conn.execute(
                        feeds.insert().values(
                            name=source.name, gone=False, consecutive_failures=0,
                            next_poll_at=now, created_at=now, url=source.url, **declared,
                        )
                    )
                    added.append(source.name)
                    continue
                changes = {k: v for k, v in declared.items() if getattr(row, k) != v}
                if row.removed_at is not None:
                    changes["removed_at"] = None
                if "declared_url" in changes:
                    # A new URL is a new conversation with a server: old validators are void.
                    # (`url` may differ from `declared_url` after an adopted 301/308.)
                    changes.update(url=source.url, etag=None, last_modified=None, gone=False,
                                   next_poll_at=now, redirect_url=None, redirect_polls=0)
                if changes:
                    conn.execute(update(feeds).where(feeds.c.id == row.id).values(**changes))
                    updated.append(source.name)
            declared_names = {s.name for s in sources}
            for name, row in rows.items():
                if name not in declared_names and row.removed_at is None:
                    conn.execute(update(feeds).where(feeds.c.id == row.id).values(removed_at=now))
                    removed.append(name)
        return SyncReport(tuple(added), tuple(updated), tuple(removed))

    def feeds_to_poll(
        self, now: datetime, *, force: bool = False, url: str | None = None,
        lease: timedelta = timedelta(minutes=10), owner: str = "local",
        limit: int | None = None, polled_before: datetime | None = None,
    ) -> list[FeedState]:
        """Claim the feeds to poll now and return them.

        Due feeds have ``next_poll_at <= now``; ``force`` takes every active feed whatever its
        schedule, except those a server told to wait (Retry-After) and those that are gone.
        Each feed is claimed with a lease (a conditional UPDATE) so that two processes never
        poll one feed at once; ``save_poll`` releases it. On PostgreSQL the candidates are
        locked with ``FOR UPDATE SKIP LOCKED``, so replicas claiming at the same moment take
        different feeds instead of queueing behind each other. ``limit`` claims a batch;
        ``polled_before`` leaves out feeds already polled since then (this cycle).
        """
        active = and_(feeds.c.enabled.is_(True), feeds.c.removed_at.is_(None),
                      feeds.c.gone.is_(False))
        cond = [active, or_(feeds.c.lease_until.is_(None), feeds.c.lease_until < now)]
        if url is not None:
            cond.append(or_(feeds.c.url == url, feeds.c.declared_url == url,
                            feeds.c.name == url))
        if force:
            cond.append(or_(feeds.c.retry_after_until.is_(None),
                            feeds.c.retry_after_until <= now))
        else:
            cond.append(feeds.c.next_poll_at <= now)
        if polled_before is not None:
            cond.append(or_(feeds.c.last_polled_at.is_(None),
                            feeds.c.last_polled_at < polled_before))
        claimed: list[FeedState] = []
        with self._begin() as conn:
            ids = [r.id for r in conn.execute(
                select(feeds.c.id).where(*cond).order_by(feeds.c.next_poll_at, feeds.c.id)
                .limit(limit).with_for_update(skip_locked=True))]
            if ids:
                # One conditional UPDATE for the batch; RETURNING gives the rows it took
                # (a feed whose lease another process took meanwhile is not among them).
                rows = {r.id: r for r in conn.execute(
                    update(feeds)
                    .where(feeds.c.id.in_(ids),
                           or_(feeds.c.lease_until.is_(None), feeds.c.lease_until < now))
                    .values(lease_until=now + lease, lease_owner=owner)
                    .returning(*feeds.c))}
                claimed = [_feed_state(rows[feed_id]) for feed_id in ids if feed_id in rows]
        return claimed

    def _feed_state(self, conn: Connection, feed_id: int) -> FeedState:
        row = conn.execute(select(feeds).where(feeds.c.id == feed_id)).one()
        return _feed_state(row)

    def list_feeds(self) -> list[FeedState]:
        counts = (
            select(entries.c.feed_id, func.count().label("n"))
            .group_by(entries.c.feed_id)
            .subquery()
        )
        with self._begin() as conn:
            rows = conn.execute(
                select(feeds, func.coalesce(counts.c.n, 0).label("entry_count"))
                .outerjoin(counts, counts.c.feed_id == feeds.c.id)
                .order_by(feeds.c.name)
            ).all()
        return [_feed_state(r, entry_count=r.entry_count) for r in rows]

    def release_feed(self, feed_id: int) -> None:
        with self._begin() as conn:
            conn.execute(update(feeds).where(feeds.c.id == feed_id)
                         .values(lease_until=None, lease_owner=None))

    # ---------------------------------------------------------------- entries

    def stored_entries(self, feed_id: int, keys: Iterable[str]) -> dict[str, StoredEntry]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, StoredEntry] = {}
        with self._begin() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                for row in conn.execute(
                    select(entries.c.id, entries.c.key, entries.c.content_hash).where(
                        entries.c.feed_id == feed_id, entries.c.key.in_(chunk)
                    )
                ):
                    found[row.key] = StoredEntry(row.id, row.content_hash)
        return found

    def save_poll(self, write: PollWrite) -> PollSaved:
        """One transaction: new and changed entries, their matches, their alerts, and last of
        all the feed's new state — so a crash at any point loses nothing (the next poll sees
        the same items again, because the validators were not saved).

        New rows go through the driver (``insert_rows``): one multi-row INSERT for the
        entries, one executemany each for their matches and alerts, rather than Core's
        per-row work (issue 7); inserts are idempotent (ON CONFLICT DO NOTHING) on both
        databases.
        """
        fresh = [w for w in write.entries if w.entry_id is None]
        edited = [w for w in write.entries if w.entry_id is not None]
        with self._begin() as conn:
            ids: dict[str, int] = {}
            to_insert: list[EntryWrite] = []
            if fresh:
                # RETURNING names the rows this insert made; a key already there (another
                # replica's, or a rerun's) is skipped by ON CONFLICT and only looked up.
                ids.update((key, entry_id) for entry_id, key in insert_rows(
                    conn, entries,
                    [{"feed_id": write.feed_id, "key": w.entry.key, "first_seen_at": write.now,
                      **_entry_values(w.entry)} for w in fresh],
                    conflict=("feed_id", "key"), returning=("id", "key")))
                to_insert = [w for w in fresh if w.entry.key in ids]
                there = [w.entry.key for w in fresh if w.entry.key not in ids]
                if there:
                    ids.update(self._entry_ids(conn, write.feed_id, there))
            made = {ids[w.entry.key] for w in to_insert}  # rows this transaction created
            if to_insert:
                match_rows = [
                    {"entry_id": ids[w.entry.key], "rule_id": m.rule_id,
                     "rule_version": m.rule_version, "hits": [_hit_json(h) for h in m.hits],
                     "matched_at": write.now}
                    for w in to_insert for m in w.matches
                ]
                insert_rows(conn, matches, match_rows, conflict=("entry_id", "rule_id"))
            for item in edited:
                assert item.entry_id is not None
                conn.execute(update(entries).where(entries.c.id == item.entry_id)
                             .values(changed_at=write.now, **_entry_values(item.entry)))
                ids[item.entry.key] = item.entry_id
                self._write_matches(conn, item.entry_id, item.matches, write.now)
            firsts = self._write_first_mentions(conn, write, ids)
            written = self._write_alerts(conn, write, ids, firsts, made)
            written += self._write_replies(
                conn, write.replies, write.updates, ids, write.now,
                batch={(w.entry_id, w.channel): w.alert_id for w in written})
            if write.feed is not None:
                shape, params = _feed_update_params(write.feed, write.feed_id)
                conn.execute(_feed_update(shape), params)
        alert_count = sum(1 for w in written if w.first)
        return PollSaved(len(to_insert), len(edited), alert_count,
                         tuple(w for w in written if w.reports))

    def _entry_ids(self, conn: Connection, feed_id: int, keys: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            found.update((r.key, r.id) for r in conn.execute(
                select(entries.c.id, entries.c.key)
                .where(entries.c.feed_id == feed_id, entries.c.key.in_(chunk))))
        return found

    def _write_first_mentions(
        self, conn: Connection, write: PollWrite, ids: dict[str, int]
    ) -> dict[int, list[tuple[str, str]]]:
        """Record tracked members no rule-and-member row has yet; return, per entry id, the
        (rule id, member) pairs that were first mentioned by that entry in this poll."""
        wanted = [(ids[w.entry.key], rid, member) for w in write.entries
                  for rid, member in w.tracked if w.entry.key in ids]
        if not wanted:
            return {}
        rule_ids = sorted({rid for _, rid, _ in wanted})
        known = {(r.rule_id, r.member) for r in conn.execute(
            select(first_mentions.c.rule_id, first_mentions.c.member)
            .where(first_mentions.c.rule_id.in_(rule_ids),
                   first_mentions.c.member.in_(sorted({m for _, _, m in wanted}))))}
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for entry_id, rid, member in wanted:
            if (rid, member) not in known:
                rows.setdefault((rid, member), {"rule_id": rid, "member": member,
                                                "entry_id": entry_id, "seen_at": write.now})
        if not rows:
            return {}
        conn.execute(self._insert(first_mentions).on_conflict_do_nothing(
            index_elements=["rule_id", "member"]), list(rows.values()))
        # Another replica may have won a race for a member: only rows naming our entries count.
        ours = conn.execute(
            select(first_mentions.c.entry_id, first_mentions.c.rule_id, first_mentions.c.member)
            .where(first_mentions.c.entry_id.in_(sorted({r["entry_id"] for r in rows.values()})),
                   first_mentions.c.rule_id.in_(rule_ids)))
        won = {(r.entry_id, r.rule_id, r.member) for r in ours if (r.rule_id, r.member) in rows}
        created: dict[int, list[tuple[str, str]]] = {}
        for item in wanted:  # in the order the entry names them
            if item in won:
                created.setdefault(item[0], []).append(item[1:])
        return created

    def first_mentions_between(
        self, start: datetime, end: datetime, rule_ids: Collection[str] | None = None
    ) -> list[FirstMention]:
        """Tracked list members first named in ``[start, end)``, oldest first."""
        return DigestStore(self.engine).first_mentions_between(start, end, rule_ids)

    def _write_alerts(
        self, conn: Connection, write: PollWrite, ids: dict[str, int],
        firsts: dict[int, list[tuple[str, str]]] | None = None,
        made: Collection[int] = (),
    ) -> list[Written]:
        """Alert rows (one per entry, channel and rules); ``made``: entries created by this
        transaction, which cannot have alerts yet."""
        if not write.alerts:
            return []
        firsts = firsts or {}
        old = sorted({ids[a.entry_key] for a in write.alerts} - set(made))
        existing = set(conn.execute(
            select(alerts.c.dedupe_key).where(alerts.c.entry_id.in_(old))).scalars()
        ) if old else set()
        rows: list[dict[str, Any]] = [
            {"entry_id": ids[a.entry_key], "channel": a.channel, "kind": "alert",
             "dedupe_key": alert_key(ids[a.entry_key], a.channel, a.rules),
             "rules": [_rule_json(r) for r in a.rules], "hits": [_hit_json(h) for h in a.hits],
             "first_mentions": _alert_firsts(firsts.get(ids[a.entry_key], ()), a.rules),
             "status": PENDING, "attempts": 0,
             "next_attempt_at": write.now,
             "created_at": write.now}
            for a in write.alerts
            if alert_key(ids[a.entry_key], a.channel, a.rules) not in existing
        ]
        if not rows:
            return []
        by_key = {r["dedupe_key"]: r for r in rows}
        keys = {entry_id: key for key, entry_id in ids.items()}
        return [Written(alert_id, by_key[dedupe]["entry_id"], keys[by_key[dedupe]["entry_id"]],
                        by_key[dedupe]["channel"], alert_id, first=True)
                for alert_id, dedupe in insert_rows(conn, alerts, rows, conflict=("dedupe_key",),
                                                    returning=("id", "dedupe_key"))]

    def _write_matches(
        self, conn: Connection, entry_id: int, found: Sequence[Match], now: datetime
    ) -> None:
        existing = {r.rule_id for r in conn.execute(
            select(matches.c.rule_id).where(matches.c.entry_id == entry_id))}
        stale = existing - {m.rule_id for m in found}
        if stale:
            conn.execute(matches.delete().where(matches.c.entry_id == entry_id,
                                                matches.c.rule_id.in_(stale)))
        for match in found:
            values = {"rule_version": match.rule_version,
                      "hits": [_hit_json(h) for h in match.hits], "matched_at": now}
            if match.rule_id in existing:
                conn.execute(update(matches).where(matches.c.entry_id == entry_id,
                                                   matches.c.rule_id == match.rule_id)
                             .values(**values))
            else:
                conn.execute(matches.insert().values(entry_id=entry_id, rule_id=match.rule_id,
                                                     **values))

    def revive_feed(self, name: str, now: datetime) -> bool:
        """An operator re-enables a feed: not gone, no Retry-After wait, due now."""
        with self._begin() as conn:
            result = conn.execute(update(feeds).where(feeds.c.name == name)
                                  .values(gone=False, retry_after_until=None, next_poll_at=now))
        return bool(result.rowcount == 1)

    def record_announcement(self, feed_id: int, state: str | None, now: datetime) -> None:
        """Remember which bad health the ops channel was told about (None: recovered)."""
        with self._begin() as conn:
            conn.execute(update(feeds).where(feeds.c.id == feed_id)
                         .values(announced_state=state, announced_at=now))

    def record_feed(self, feed_id: int, update_: FeedUpdate) -> None:
        """Save a feed's state after a poll that stored no entries (304, error)."""
        self.record_feeds([(feed_id, update_)])

    def record_feeds(self, updates: Sequence[tuple[int, FeedUpdate]]) -> None:
        """``record_feed`` for several feeds in one transaction (a warm cycle's 304s: one
        commit per feed was most of its time)."""
        if not updates:
            return
        # One executemany per shape of update (a warm cycle's 304s are one shape).
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for feed_id, update_ in updates:
            shape, params = _feed_update_params(update_, feed_id)
            shapes.setdefault(shape, []).append(params)
        with self._begin() as conn:
            for keys, rows in shapes.items():
                conn.execute(_feed_update(keys), rows)

    def entry_count(self) -> int:
        with self._begin() as conn:
            return int(conn.execute(select(func.count()).select_from(entries)).scalar_one())

    def match_rule_ids_for(self, entry_id: int) -> list[str]:
        """The rules that matched a stored entry (before its latest change)."""
        with self._begin() as conn:
            return sorted(conn.execute(
                select(matches.c.rule_id).where(matches.c.entry_id == entry_id)).scalars())


class _Unit:
    """An open transaction shared by a thread's store calls (``Store.unit``)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.failed = False

    @contextlib.contextmanager
    def join(self) -> Iterator[Connection]:
        try:
            yield self.conn
        except BaseException:
            self.failed = True  # never commit half of a call
            raise


# ----------------------------------------------------------------- row mapping


def _feed_state(row: Any, entry_count: int = 0) -> FeedState:
    return FeedState(
        id=row.id, name=row.name, url=row.url,
        interval=timedelta(seconds=row.interval_seconds), tags=tuple(row.tags or ()),
        language=row.language, enabled=row.enabled, removed=row.removed_at is not None,
        gone=row.gone, etag=row.etag, last_modified=row.last_modified,
        next_poll_at=row.next_poll_at, retry_after_until=row.retry_after_until,
        last_polled_at=row.last_polled_at, last_success_at=row.last_success_at,
        first_success_at=row.first_success_at, last_status=row.last_status,
        last_error=row.last_error, last_error_kind=row.last_error_kind,
        consecutive_failures=row.consecutive_failures, title=row.title,
        entry_count=entry_count, declared_url=row.declared_url,
        redirect_url=row.redirect_url, redirect_polls=row.redirect_polls or 0,
        failing_since=row.failing_since,
        rhythm=timedelta(seconds=row.rhythm_seconds) if row.rhythm_seconds else None,
        last_entry_at=row.last_entry_at, announced_state=row.announced_state,
    )


# How ``_feed_update_values`` names a column set only when it is empty ("keep:" + column: the
# first success, the first failure of a run of failures), and the failure counter's increment.
_KEEP = "keep:"
_ONE_MORE_FAILURE = "consecutive_failures+1"


@functools.lru_cache(maxsize=64)
def _feed_update(keys: tuple[str, ...]) -> Any:
    """UPDATE feeds setting ``keys`` (of ``_feed_update_values``), by parameters named as
    ``_feed_update_params`` names them, for the feed ``p_id``. Built once per shape, so that
    a batch of updates is one executemany and Core compiles it once."""
    values: dict[str, Any] = {}
    for key in keys:
        if key == _ONE_MORE_FAILURE:
            values["consecutive_failures"] = feeds.c.consecutive_failures + 1
            continue
        column = key.removeprefix(_KEEP)
        param = bindparam(_param(key), type_=feeds.c[column].type)
        values[column] = func.coalesce(feeds.c[column], param) if key != column else param
    return update(feeds).where(feeds.c.id == bindparam("p_id")).values(values)


def _param(key: str) -> str:
    return "p_" + key.replace(":", "_")


def _feed_update_params(u: FeedUpdate, feed_id: int) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The shape (for ``_feed_update``) and parameters of a feed's new state."""
    values = _feed_update_values(u)
    params = {_param(key): value for key, value in values.items() if key != _ONE_MORE_FAILURE}
    params["p_id"] = feed_id
    return tuple(values), params


def _feed_update_values(u: FeedUpdate) -> dict[str, Any]:
    values: dict[str, Any] = {
        "last_polled_at": u.polled_at, "next_poll_at": u.next_poll_at,
        "last_status": u.status, "retry_after_until": u.retry_after_until,
        "lease_until": None, "lease_owner": None,
    }
    if u.success:
        values.update(last_success_at=u.polled_at, consecutive_failures=0, last_error=None,
                      last_error_kind=None)
        values[_KEEP + "first_success_at"] = u.polled_at
        if not u.keep_validators:
            # Replace validators whenever the server sends new ones (RFC 9111 §4.3.4).
            if u.etag is not None:
                values["etag"] = u.etag
            if u.last_modified is not None:
                values["last_modified"] = u.last_modified
        if u.title:
            values["title"] = u.title
        values.update(failing_since=None, redirect_url=u.redirect_url,
                      redirect_polls=u.redirect_polls)
        if u.adopt_url is not None:
            values["url"] = u.adopt_url
        if u.rhythm is not None:
            values["rhythm_seconds"] = int(u.rhythm.total_seconds())
        if u.last_entry_at is not None:
            values["last_entry_at"] = u.last_entry_at
    else:
        values.update(last_error=u.error, last_error_kind=u.error_kind)
        values[_KEEP + "failing_since"] = u.polled_at
        values[_ONE_MORE_FAILURE] = None
        if u.gone:
            values["gone"] = True
    return values


def _entry_values(entry: Entry) -> dict[str, Any]:
    return {
        "title": entry.title, "link": entry.link, "author": entry.author,
        "categories": list(entry.categories), "summary": entry.summary,
        "content": entry.content, "published": entry.published, "updated": entry.updated,
        "language": entry.language, "content_hash": entry.content_hash,
    }


def _alert_firsts(
    firsts: Sequence[tuple[str, str]], rules: Sequence[AlertRule]
) -> list[str]:
    """The members first mentioned by this entry for the rules this alert names."""
    named = {r.id for r in rules}
    return list(dict.fromkeys(member for rid, member in firsts if rid in named))


def _hit_json(hit: Hit) -> dict[str, Any]:
    return {"field": hit.field, "start": hit.start, "end": hit.end, "term": hit.term}


def _rule_json(rule: AlertRule) -> dict[str, Any]:
    return {"id": rule.id, "title": rule.title, "severity": rule.severity.value,
            "version": rule.version}
