"""The outbox: every message the bot posts, one row each (``alerts`` table; issue 4).

    pending ──claim──▶ sending ──▶ sent (channel ID, ts)
       ▲                  │──────▶ failed (reason)           alerts retry --failed: ▶ pending
       └── retry at … ────┘

A reply or an update is claimable only once its parent alert is sent (it needs the parent's
ts). An alert folded into a flood-control summary names the summary (``summary_id``), is never
claimed on its own, and follows the summary: sent with its ts, or failed with its reason.

``OutboxRepo`` is a part of ``bot.store.Store``; its methods are each one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, update
from sqlalchemy.orm import aliased

from bot.messages import Change, Duplicate, Kind, Message, Posted, Reply, Summary, Update
from bot.model import Alert, AlertRule, Entry, Hit, Severity
from bot.plan import PlannedReply, PlannedUpdate, PostedAlert, Previous, Report
from bot.store.db import insert_rows
from bot.store.tables import alerts, entries, feeds, matches

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
KEY_MAX = 255


@dataclass(frozen=True, slots=True)
class AlertStatusCounts:
    counts: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, status: str) -> int:
        return self.counts.get(status, 0)


@dataclass(frozen=True, slots=True)
class FailedAlert:
    id: int
    channel: str
    title: str
    error: str | None
    attempts: int
    kind: str = "alert"


def dedupe_key(*parts: object) -> str:
    """A row's identity, written once: readable when short, hashed when long."""
    key = ":".join(str(p) for p in parts)
    if len(key) <= KEY_MAX:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"{parts[0]}:{digest}"


def alert_key(entry_id: int, channel: str, rules: Iterable[AlertRule]) -> str:
    """One alert per entry, channel and set of rules newly matching there (rows written
    before issue 4 are ``alert:<entry>:<channel>``)."""
    return dedupe_key("alert", entry_id, channel, ",".join(sorted(r.id for r in rules)))


@dataclass(frozen=True, slots=True)
class Written:
    """An outbox row a poll wrote. ``reports`` when it tells of a story (a first alert, or
    a duplicate's reply under ``thread_id``): the row ``recent_reports`` would read back."""

    alert_id: int
    entry_id: int | None
    entry_key: str
    channel: str
    thread_id: int | None
    first: bool = False  # a top-level alert
    duplicate: bool = False  # a reply: another source of the story
    independent: bool = False  # … that confirms it

    @property
    def reports(self) -> bool:
        return self.first or self.duplicate


def _claimable(parent: Any) -> Any:
    """Pending rows that may go now: not inside a summary, and no parent or a sent one."""
    return and_(alerts.c.status == PENDING, alerts.c.summary_id.is_(None),
                or_(alerts.c.parent_id.is_(None), parent.c.status == SENT))


class OutboxRepo:
    """Outbox reads and writes; mixed into ``Store``, which provides ``_begin``."""

    engine: Engine

    def _begin(self) -> AbstractContextManager[Connection]:  # pragma: no cover - Store's
        raise NotImplementedError

    # ---------------------------------------------------------------- writing (in a poll)

    def _write_replies(
        self, conn: Connection, replies: Sequence[PlannedReply],
        updates: Sequence[PlannedUpdate], ids: Mapping[str, int], now: datetime,
        batch: Mapping[tuple[int | None, str], int] | None = None,
    ) -> list[Written]:
        """Thread replies and updates planned by a poll, in its transaction. A reply to an
        alert of the same batch finds it by entry key and channel (``batch``: the alerts
        this transaction wrote, by entry id and channel; else it is looked up)."""
        rows: list[dict[str, Any]] = []
        about: dict[str, Written] = {}
        keys = {entry_id: key for key, entry_id in ids.items()}
        for reply in replies:
            entry_id = ids.get(reply.entry_key)
            parent_id = reply.parent_id
            if parent_id is None and reply.parent_key in ids:
                parent_entry = ids[reply.parent_key or ""]
                parent_id = (batch or {}).get((parent_entry, reply.channel)) or conn.execute(
                    select(alerts.c.id).where(
                        alerts.c.entry_id == parent_entry,
                        alerts.c.channel == reply.channel, alerts.c.kind == Kind.ALERT.value)
                    .order_by(alerts.c.id).limit(1)).scalar()
            if entry_id is None or parent_id is None:
                continue
            if reply.duplicate is not None:
                key = dedupe_key("dup", entry_id, reply.channel)
                detail: dict[str, Any] = {"duplicate": _duplicate_json(reply.duplicate)}
            else:
                key = dedupe_key("change", entry_id, reply.channel, reply.change_of)
                detail = {"change": _change_json(reply.change or Change())}
            rows.append(_row(Kind.REPLY, entry_id, reply.channel, now, key, parent_id=parent_id,
                             rules=reply.rules, detail=detail))
            about[key] = Written(0, entry_id, reply.entry_key, reply.channel, parent_id,
                                 duplicate=reply.duplicate is not None,
                                 independent=bool(reply.duplicate and reply.duplicate.independent))
        for upd in updates:
            entry_id = conn.execute(select(alerts.c.entry_id)
                                    .where(alerts.c.id == upd.parent_id)).scalar()
            key = dedupe_key("update", upd.parent_id, upd.sources)
            rows.append(_row(Kind.UPDATE, entry_id, upd.channel, now, key,
                             parent_id=upd.parent_id))
            about[key] = Written(0, entry_id, keys.get(entry_id or 0, ""), upd.channel,
                                 upd.parent_id)
        if not rows:
            return []
        existing = set(conn.execute(select(alerts.c.dedupe_key)
                                    .where(alerts.c.dedupe_key.in_(list(about)))).scalars())
        fresh = list({r["dedupe_key"]: r for r in rows if r["dedupe_key"] not in existing}
                     .values())
        return [replace(about[key], alert_id=alert_id) for alert_id, key in insert_rows(
            conn, alerts, fresh, returning=("id", "dedupe_key"))]

    # ---------------------------------------------------------------- reading (for a poll)

    def recent_reports(self, channels: Collection[str], since: datetime) -> list[Report]:
        """First alerts and duplicate replies in ``channels`` written since ``since``: what a
        new entry may be a duplicate of."""
        return self.reports_after(channels, since)[0]

    def reports_after(
        self, channels: Collection[str], since: datetime, after_id: int = 0
    ) -> tuple[list[Report], int]:
        """``recent_reports`` among the rows whose id is above ``after_id`` (a poll cycle
        reads the window once, then only what was written since), and the highest row id
        read (``after_id`` when none)."""
        if not channels:
            return [], after_id
        with self._begin() as conn:
            rows = conn.execute(
                select(alerts.c.id, alerts.c.kind, alerts.c.parent_id, alerts.c.channel,
                       alerts.c.detail, alerts.c.created_at, entries.c.link, entries.c.title,
                       feeds.c.name.label("feed_name"))
                .join(entries, entries.c.id == alerts.c.entry_id)
                .join(feeds, feeds.c.id == entries.c.feed_id)
                .where(alerts.c.id > after_id,
                       alerts.c.channel.in_(sorted(channels)), alerts.c.created_at >= since,
                       or_(and_(alerts.c.kind == Kind.ALERT.value, alerts.c.parent_id.is_(None)),
                           alerts.c.kind == Kind.REPLY.value))
                .order_by(alerts.c.id)).all()
        reports = []
        for r in rows:
            after_id = max(after_id, r.id)
            duplicate = (r.detail or {}).get("duplicate") if r.kind == Kind.REPLY else None
            if r.kind == Kind.REPLY and duplicate is None:
                continue  # a change reply reports nothing new
            reports.append(Report(
                thread_id=r.parent_id if r.kind == Kind.REPLY else r.id, channel=r.channel,
                feed_name=r.feed_name, link=r.link, title=r.title, at=r.created_at,
                first=r.kind == Kind.ALERT, independent=bool((duplicate or {}).get("independent"))))
        return reports, after_id

    def previous_entries(self, entry_ids: Collection[int]) -> dict[int, Previous]:
        """Changed entries as stored before this poll: their values, the rules that matched,
        and their top-level alerts with how many change replies each has had."""
        if not entry_ids:
            return {}
        ids = sorted(entry_ids)
        with self._begin() as conn:
            stored = {r.id: r for r in conn.execute(select(entries).where(entries.c.id.in_(ids)))}
            rules: dict[int, list[str]] = {}
            for r in conn.execute(select(matches.c.entry_id, matches.c.rule_id)
                                  .where(matches.c.entry_id.in_(ids))):
                rules.setdefault(r.entry_id, []).append(r.rule_id)
            child = aliased(alerts)
            replies = (select(func.count()).select_from(child)
                       .where(child.c.parent_id == alerts.c.id, child.c.kind == Kind.REPLY.value,
                              child.c.entry_id == alerts.c.entry_id)
                       .scalar_subquery())
            posted: dict[int, list[PostedAlert]] = {}
            for r in conn.execute(
                select(alerts.c.id, alerts.c.entry_id, alerts.c.channel, alerts.c.status,
                       replies.label("n"))
                .where(alerts.c.entry_id.in_(ids), alerts.c.kind == Kind.ALERT.value)
                .order_by(alerts.c.id)
            ):
                posted.setdefault(r.entry_id, []).append(
                    PostedAlert(r.id, r.channel, r.status, int(r.n)))
        return {
            i: Previous(_entry(row), tuple(sorted(rules.get(i, ()))), tuple(posted.get(i, ())))
            for i, row in stored.items()
        }

    # ---------------------------------------------------------------- delivering

    def claim_alerts(self, now: datetime, limit: int = 100,
                     only: Collection[int] | None = None) -> list[Message]:
        """Move due, claimable rows to ``sending`` (attempts + 1) and return them, oldest
        first; ``only`` these rows when given. Nothing is sent that was not first committed:
        the claim is its own transaction."""
        parent = aliased(alerts)
        claimed: list[int] = []
        which = [] if only is None else [alerts.c.id.in_(sorted(only))]
        with self._begin() as conn:
            ids = list(conn.execute(
                select(alerts.c.id).outerjoin(parent, parent.c.id == alerts.c.parent_id)
                .where(_claimable(parent), alerts.c.next_attempt_at <= now, *which)
                .order_by(alerts.c.id).limit(limit)).scalars())
            for alert_id in ids:
                result = conn.execute(
                    update(alerts).where(alerts.c.id == alert_id, alerts.c.status == PENDING)
                    .values(status=SENDING, claimed_at=now, attempts=alerts.c.attempts + 1))
                if result.rowcount == 1:
                    claimed.append(alert_id)
        return self.messages(claimed)

    def in_flight_alerts(self, claimed_before: datetime | None = None) -> list[Message]:
        """Rows left in ``sending``: the process died between claiming and recording.

        With several replicas, only rows claimed before ``claimed_before`` (the claim lease)
        are another process's abandoned work; newer ones may be mid-post in a live replica.
        """
        cond = [alerts.c.status == SENDING]
        if claimed_before is not None:
            cond.append(alerts.c.claimed_at < claimed_before)
        with self._begin() as conn:
            ids = list(conn.execute(select(alerts.c.id).where(*cond)
                                    .order_by(alerts.c.id)).scalars())
        return self.messages(ids)

    def next_alert_due(self) -> datetime | None:
        """When the next claimable row falls due (replies wait for their parent)."""
        parent = aliased(alerts)
        with self._begin() as conn:
            value = conn.execute(
                select(func.min(alerts.c.next_attempt_at))
                .outerjoin(parent, parent.c.id == alerts.c.parent_id)
                .where(_claimable(parent))).scalar_one()
        return value if isinstance(value, datetime) else None

    def sure_alerts(self, now: datetime, top: Mapping[str, int],
                    room: Mapping[str, int] | None) -> list[int]:
        """The due top-level alerts that flood control posts whatever a pass brings next
        (``fold_flood`` keeps the most severe, then oldest): in each channel of ``top``, the
        oldest of the most severe level there — the highest of ``top[channel]`` (the rank
        its rules can raise) and of the alerts waiting — as many as its ``room`` (the cap
        less what the pass has posted there); every due one when ``room`` is None (no
        flood control)."""
        with self._begin() as conn:
            rows = conn.execute(
                select(alerts.c.id, alerts.c.channel, alerts.c.rules)
                .where(alerts.c.status == PENDING, alerts.c.kind == Kind.ALERT.value,
                       alerts.c.summary_id.is_(None), alerts.c.parent_id.is_(None),
                       alerts.c.next_attempt_at <= now, alerts.c.channel.in_(sorted(top)))
                .order_by(alerts.c.id)).all()
        if room is None:
            return [r.id for r in rows]
        by_channel: dict[str, list[tuple[int, int]]] = {}
        for r in rows:
            by_channel.setdefault(r.channel, []).append((_severity_rank(r.rules), r.id))
        sure: list[int] = []
        for channel, waiting in by_channel.items():
            level = max(top[channel], *(rank for rank, _ in waiting))
            sure += [i for rank, i in waiting if rank == level][:room.get(channel, 0)]
        return sorted(sure)

    def fold_flood(self, now: datetime, cap: int, posted: Mapping[str, int]) -> list[int]:
        """Flood control: where more due top-level alerts wait for a channel than it may still
        take in this pass (``cap`` less ``posted`` there already), keep the most severe (then
        oldest) and fold the rest into one new summary row. Returns the summary ids."""
        summaries: list[int] = []
        with self._begin() as conn:
            rows = conn.execute(
                select(alerts.c.id, alerts.c.channel, alerts.c.rules)
                .where(alerts.c.status == PENDING, alerts.c.kind == Kind.ALERT.value,
                       alerts.c.summary_id.is_(None), alerts.c.parent_id.is_(None),
                       alerts.c.next_attempt_at <= now)
                .order_by(alerts.c.id)).all()
            by_channel: dict[str, list[Any]] = {}
            for r in rows:
                by_channel.setdefault(r.channel, []).append(r)
            for channel, waiting in sorted(by_channel.items()):
                room = max(cap - posted.get(channel, 0), 0)
                if len(waiting) <= room:
                    continue
                ranked = sorted(waiting, key=lambda r: (-_severity_rank(r.rules), r.id))
                folded = sorted(r.id for r in ranked[room:])
                inserted = conn.execute(alerts.insert().values(_row(
                    Kind.SUMMARY, None, channel, now,
                    dedupe_key("summary", channel, folded[0], len(folded)))))
                key = inserted.inserted_primary_key
                assert key is not None
                summary_id = int(key[0])
                conn.execute(update(alerts).where(alerts.c.id.in_(folded))
                             .values(summary_id=summary_id))
                summaries.append(summary_id)
        return summaries

    def alert_attempts(self, alert_id: int) -> int:
        with self._begin() as conn:
            return int(conn.execute(select(alerts.c.attempts)
                                    .where(alerts.c.id == alert_id)).scalar_one())

    def mark_sent(
        self, alert_id: int, *, ts: str | None, now: datetime, channel: str | None = None,
        note: str | None = None,
    ) -> None:
        """Record a delivery; the alerts a summary lists are delivered with it."""
        with self._begin() as conn:
            conn.execute(update(alerts).where(alerts.c.id == alert_id)
                         .values(status=SENT, ts=ts, posted_channel=channel, sent_at=now,
                                 error=note))
            conn.execute(update(alerts).where(alerts.c.summary_id == alert_id)
                         .values(status=SENT, ts=ts, posted_channel=channel, sent_at=now,
                                 error=None))

    def mark_retry(self, alert_id: int, *, at: datetime, error: str) -> None:
        with self._begin() as conn:
            conn.execute(update(alerts).where(alerts.c.id == alert_id)
                         .values(status=PENDING, next_attempt_at=at, error=error))

    def mark_failed(self, alert_id: int, *, error: str, now: datetime) -> None:
        with self._begin() as conn:
            conn.execute(update(alerts).where(alerts.c.id == alert_id)
                         .values(status=FAILED, error=error, claimed_at=now))
            conn.execute(update(alerts).where(alerts.c.summary_id == alert_id)
                         .values(status=FAILED, error=f"in summary #{alert_id}: {error}",
                                 claimed_at=now))

    def requeue(self, now: datetime, *, failed: bool = False) -> int:
        """Make every pending row due now (a retry waiting out a backoff or a Retry-After);
        with ``failed``, failed rows too. An alert inside a summary stays with it."""
        statuses = [PENDING, FAILED] if failed else [PENDING]
        with self._begin() as conn:
            result = conn.execute(
                update(alerts)
                .where(alerts.c.status.in_(statuses),
                       or_(alerts.c.status == FAILED, alerts.c.next_attempt_at > now))
                .values(status=PENDING, next_attempt_at=now, error=None))
        return int(result.rowcount)

    def requeue_failed(self, now: datetime) -> int:
        with self._begin() as conn:
            result = conn.execute(update(alerts).where(alerts.c.status == FAILED)
                                  .values(status=PENDING, next_attempt_at=now, error=None))
        return int(result.rowcount)

    def alert_counts(self) -> AlertStatusCounts:
        with self._begin() as conn:
            rows = conn.execute(select(alerts.c.status, func.count()).group_by(alerts.c.status))
            return AlertStatusCounts({status: int(n) for status, n in rows})

    def failed_alerts(self, limit: int = 20) -> list[FailedAlert]:
        with self._begin() as conn:
            rows = conn.execute(
                select(alerts.c.id, alerts.c.kind, alerts.c.channel, alerts.c.error,
                       alerts.c.attempts, entries.c.title)
                .outerjoin(entries, entries.c.id == alerts.c.entry_id)
                .where(alerts.c.status == FAILED, alerts.c.summary_id.is_(None))
                .order_by(alerts.c.id.desc()).limit(limit))
            return [FailedAlert(r.id, r.channel, r.title or f"({r.kind})", r.error, r.attempts,
                                r.kind) for r in rows]

    # ---------------------------------------------------------------- row → message

    def messages(self, ids: Sequence[int]) -> list[Message]:
        """The messages for outbox rows ``ids``, in id order."""
        if not ids:
            return []
        with self._begin() as conn:
            rows = _alert_rows(conn, alerts.c.id.in_(list(ids)))
            parent_ids = {r.parent_id for r in rows if r.parent_id is not None}
            parents = {r.id: r for r in _alert_rows(conn, alerts.c.id.in_(sorted(parent_ids)))}
            summaries = [r.id for r in rows if r.kind == Kind.SUMMARY]
            members: dict[int, list[Any]] = {}
            for m in _alert_rows(conn, alerts.c.summary_id.in_(summaries)) if summaries else []:
                members.setdefault(m.summary_id, []).append(m)
            sources = _sources(conn, sorted(r.parent_id for r in rows if r.kind == Kind.UPDATE))
        out: list[Message] = []
        for r in rows:
            parent = parents.get(r.parent_id)
            if r.kind == Kind.SUMMARY:
                out.append(Summary(r.id, r.channel, tuple(_alert(m) for m in members.get(r.id, ())),
                                   r.created_at))
            elif r.kind == Kind.REPLY and parent is not None:
                detail = r.detail or {}
                out.append(Reply(
                    id=r.id, channel=r.channel, parent_id=parent.id, thread=_posted(parent),
                    feed_name=r.feed_name, entry=_entry(r), rules=_rules(r.rules),
                    parent_title=parent.title or "",
                    duplicate=_duplicate(detail.get("duplicate")),
                    change=_change(detail.get("change")), created_at=r.created_at))
            elif r.kind == Kind.UPDATE and parent is not None:
                target = _posted(parent) if parent.summary_id is None else None
                out.append(Update(r.id, r.channel, _alert(parent), target,
                                  sources.get(parent.id, (parent.feed_name,)), r.created_at))
            else:
                out.append(_alert(r))
        return out


# ------------------------------------------------------------------------ helpers


def _row(
    kind: Kind, entry_id: int | None, channel: str, now: datetime, key: str, *,
    parent_id: int | None = None, rules: Sequence[AlertRule] = (),
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {"kind": kind.value, "entry_id": entry_id, "channel": channel, "parent_id": parent_id,
            "rules": [_rule_json(r) for r in rules], "hits": [], "first_mentions": [],
            "detail": detail, "dedupe_key": key, "status": PENDING, "attempts": 0,
            "next_attempt_at": now, "created_at": now}


def _alert_rows(conn: Connection, where: Any) -> list[Any]:
    return list(conn.execute(
        select(alerts, entries.c.key, entries.c.title, entries.c.link, entries.c.author,
               entries.c.categories, entries.c.summary, entries.c.content, entries.c.published,
               entries.c.updated, entries.c.language, entries.c.content_hash,
               feeds.c.name.label("feed_name"))
        .outerjoin(entries, entries.c.id == alerts.c.entry_id)
        .outerjoin(feeds, feeds.c.id == entries.c.feed_id)
        .where(where).order_by(alerts.c.id)).all())


def _sources(conn: Connection, parent_ids: Sequence[int]) -> dict[int, tuple[str, ...]]:
    """Per alert: its feed, then each feed whose duplicate reply confirmed the story."""
    if not parent_ids:
        return {}
    out: dict[int, list[str]] = {}
    for r in _alert_rows(conn, alerts.c.id.in_(parent_ids)):
        out[r.id] = [r.feed_name]
    for r in _alert_rows(conn, and_(alerts.c.parent_id.in_(parent_ids),
                                    alerts.c.kind == Kind.REPLY.value)):
        duplicate = (r.detail or {}).get("duplicate") or {}
        if duplicate.get("independent") and r.feed_name not in out[r.parent_id]:
            out[r.parent_id].append(r.feed_name)
    return {k: tuple(v) for k, v in out.items()}


def _posted(row: Any) -> Posted | None:
    if row.ts is None or row.status != SENT:
        return None
    return Posted(row.posted_channel or row.channel, row.ts)


_RANK = {s.value: s.rank for s in Severity}


def _severity_rank(rules: Any) -> int:
    return max((_RANK.get(r.get("severity"), 0) for r in rules or ()), default=0)


def _entry(row: Any) -> Entry:
    return Entry(
        key=row.key or "", title=row.title or "", link=row.link, author=row.author,
        categories=tuple(row.categories or ()), summary=row.summary or "",
        content=row.content or "", published=row.published, updated=row.updated,
        language=row.language, content_hash=row.content_hash or "",
    )


def _rules(data: Any) -> tuple[AlertRule, ...]:
    return tuple(AlertRule(r["id"], r["title"], Severity(r["severity"]), r["version"])
                 for r in data or ())


def _alert(row: Any) -> Alert:
    hits = tuple(Hit(h["field"], h["start"], h["end"], h["term"]) for h in row.hits or ())
    return Alert(id=row.id, channel=row.channel, feed_name=row.feed_name or "",
                 entry=_entry(row), rules=_rules(row.rules), hits=hits,
                 created_at=row.created_at, first_mentions=tuple(row.first_mentions or ()))


def _rule_json(rule: AlertRule) -> dict[str, Any]:
    return {"id": rule.id, "title": rule.title, "severity": rule.severity.value,
            "version": rule.version}


def _duplicate_json(d: Duplicate) -> dict[str, Any]:
    return {"reason": d.reason, "independent": d.independent, "first_feed": d.first_feed}


def _duplicate(data: Any) -> Duplicate | None:
    if not isinstance(data, dict):
        return None
    return Duplicate(str(data.get("reason", "")), bool(data.get("independent")),
                     str(data.get("first_feed", "")))


def _change_json(c: Change) -> dict[str, Any]:
    return {"title_removed": list(c.title_removed), "title_added": list(c.title_added),
            "text_field": c.text_field, "text_removed": c.text_removed,
            "text_added": c.text_added, "link_changed": c.link_changed}


def _change(data: Any) -> Change | None:
    if not isinstance(data, dict):
        return None
    return Change(tuple(data.get("title_removed") or ()), tuple(data.get("title_added") or ()),
                  data.get("text_field"), str(data.get("text_removed") or ""),
                  str(data.get("text_added") or ""), bool(data.get("link_changed")))
