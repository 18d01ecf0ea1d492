"""One poll cycle: ``due feeds | fetch | parse | decide | match | plan alerts | store``.

The pipeline moves data and makes no choices: every decision is in ``bot.decide`` (pure), every
match in ``bot.rules`` (pure). Each feed's results are written in one transaction, after which
the delivery loop (``bot.notify.delivery``) posts the alerts it wrote. (On SQLite, feeds stored
back to back share a transaction — one fsync for several — each still all or nothing: see
``_Group``.) Parsing, and matching while the poller is the slower side, run in worker
processes (``bot.parsepool``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot import metrics
from bot.decide import (
    RuleRoute,
    backoff,
    in_backfill,
    retry_after,
    storable_key,
    triage,
)
from bot.errors import ConfigError, FeedError, ParseError
from bot.fetch import Fetcher, FetchRequest, HTTPStatusError
from bot.model import AlertRule, Entry, FetchResult, Match
from bot.parse import ParsedFeed, Parser, parse_feed
from bot.parsepool import Matched, ParseFailure, ParsePool
from bot.plan import (
    DUPLICATE_WINDOW,
    Candidate,
    OutboxPlan,
    Report,
    StoryIndex,
    plan_outbox,
)
from bot.rules import RuleSet
from bot.schedule import effective_interval, next_poll_after, publishing_rhythm, track_redirect
from bot.store import AlertWrite, EntryWrite, FeedState, FeedUpdate, PollWrite, Store
from bot.store.outbox import Written

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class FeedOutcome:
    """What one feed's poll did, for the summary table and logs."""

    feed: str
    url: str
    result: str  # "ok" | "not_modified" | "failed"
    new: int = 0
    changed: int = 0
    alerts: int = 0
    error: str | None = None
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    """Where rules' alerts go. ``single_channel`` (webhook, console) folds every rule into one
    destination so that an entry is one message; otherwise rules use route.slack or the
    default channel."""

    default_channel: str | None = None
    single_channel: str | None = None

    def routes(self, rules: RuleSet) -> dict[str, RuleRoute]:
        routes: dict[str, RuleRoute] = {}
        missing: list[str] = []
        for rule in rules.rules:
            if not rule.enabled:
                continue
            if self.single_channel is not None:
                channels: tuple[str, ...] = (self.single_channel,)
            elif rule.slack_channels:
                channels = tuple(rule.slack_channels)
            elif self.default_channel:
                channels = (self.default_channel,)
            else:
                missing.append(rule.id)
                continue
            routes[rule.id] = RuleRoute(
                AlertRule(rule.id, rule.title, rule.severity, rule.version), rule.status, channels
            )
        if missing:
            raise ConfigError(
                "POLICYBOT_SLACK_CHANNEL: not set, and these rules have no route.slack: "
                + ", ".join(missing)
            )
        return routes


@dataclass
class _Stories:
    """The stories of a cycle's channels (bot.plan.StoryIndex), read from the store once and
    then only as far as new rows (``last_id``)."""

    channels: frozenset[str]
    index: StoryIndex
    last_id: int


@dataclass
class Poller:
    """Runs poll cycles over the store's feeds with one fetcher and the current rules."""

    store: Store
    fetcher: Fetcher
    rules: Callable[[], RuleSet]
    routing: Routing
    clock: Clock
    backfill_window: timedelta = timedelta(hours=24)
    backfill: bool = True
    lease: timedelta = timedelta(minutes=10)  # a feed's claim; another replica may take over
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    claim_batch: int = 64
    adaptive_interval: bool = False  # poll rarely-publishing feeds less often (bot.schedule)
    parser: Parser = "feedparser"  # POLICYBOT_PARSER (bot.parse)
    # Parse in worker processes (bot.parsepool); None parses in this process.
    parse_pool: ParsePool | None = None
    # Match in the pool's workers: None decides per document (while this process is the
    # slower side); True always, False never.
    pool_matching: bool | None = None
    # Called whenever polls' writes (alerts among them) have committed, from the poller's
    # thread: `policybot run` wakes its early delivery with it (bot.scheduler). Must not block.
    stored: Callable[[], None] | None = None
    _stories: _Stories | None = field(default=None, init=False, repr=False)

    def cycle(
        self, *, force: bool = False, url: str | None = None,
        stop: threading.Event | None = None,
    ) -> list[FeedOutcome]:
        """Poll the due feeds (or every active feed with ``force``; or the one at ``url``).

        Feeds are claimed in batches as the fetches need them, so that a cycle streams
        through thousands of feeds without holding them all, replicas share the work as they
        go, and the fetches never wait for a claim (the next batch is claimed while the
        last one's fetches run).
        """
        started = self.clock()
        self._stories = None  # read the channels' stories afresh, once per cycle

        def claims() -> Iterator[Sequence[FeedState]]:
            while stop is None or not stop.is_set():
                feeds = self.store.feeds_to_poll(
                    self.clock(), force=force, url=url, lease=self.lease, owner=self.owner,
                    limit=self.claim_batch, polled_before=started)
                if not feeds:
                    return
                yield feeds

        with _Group(self.store, enabled=self._sole_writer, stored=self.stored) as group:
            return self._poll_feeds(claims(), group, stop)

    def poll_feeds(
        self, feeds: Sequence[FeedState], *, stop: threading.Event | None = None
    ) -> list[FeedOutcome]:
        """Poll ``feeds`` (claimed by this poller)."""
        with _Group(self.store, enabled=self._sole_writer, stored=self.stored) as group:
            return self._poll_feeds([feeds], group, stop)

    def _poll_feeds(self, batches: Iterable[Sequence[FeedState]], group: _Group,
                    stop: threading.Event | None) -> list[FeedOutcome]:
        """Poll the feeds of ``batches``, claimed batch by batch as the fetches need them."""
        by_id: dict[int, FeedState] = {}  # claimed, and neither stored nor parsing

        def requests() -> Iterator[FetchRequest[int]]:
            for batch in batches:
                by_id.update((f.id, f) for f in batch)
                for f in batch:
                    yield FetchRequest(key=f.id, url=f.url, etag=f.etag,
                                       last_modified=f.last_modified)

        outcomes: list[FeedOutcome] = []
        pool = self.parse_pool
        # Documents in the parse pool, in the order they were fetched. At most a few per
        # worker: the cycle streams feeds through, it never holds them all (issue 7).
        parsing: dict[Future[ParsedFeed | Matched | ParseFailure],
                      tuple[FeedState, FetchResult]] = {}
        if pool is not None:
            pool.use_rules(self.rules())  # the workers match too (bot.parsepool)
        # 304s change only their feed's state: saved together, ``claim_batch`` at a time
        # (until then the feed stays claimed; lost in a crash, it is simply polled again).
        unchanged: list[tuple[int, FeedUpdate]] = []
        fetches = self.fetcher.fetch_many(requests(), idle=group.commit)
        for request, fetched in fetches:
            feed = by_id.pop(request.key)
            if stop is not None and stop.is_set():
                # Shutting down: start no more fetches (closing the generator waits for the
                # running ones) and leave every claimed feed not yet stored due again.
                fetches.close()
                group.join()
                for unpolled in (feed, *by_id.values()):
                    self.store.release_feed(unpolled.id)
                by_id.clear()
                break
            if parsing:
                # Documents the pool has parsed meanwhile are stored now, not when the next
                # document arrives: in a warm cycle that is the end of the cycle, and their
                # alerts would wait for it (issue 7, time to Slack).
                outcomes += self._store_parsed(parsing, stop, group, block=False)
            if isinstance(fetched, FetchResult) and fetched.not_modified:
                unchanged.append((feed.id, self._answered(feed, fetched, self.clock(), None)))
                outcomes.append(self._record(
                    FeedOutcome(feed.name, feed.url, "not_modified", status=304)))
                if len(unchanged) >= self.claim_batch:
                    group.join()
                    self.store.record_feeds(unchanged)
                    unchanged = []
                continue
            if pool is not None and isinstance(fetched, FetchResult) and not fetched.not_modified:
                # Matching goes to the pool while this process is the slower side (parsed
                # documents wait for it); else this process matches when it stores.
                behind = (any(f.done() for f in parsing) if self.pool_matching is None
                          else self.pool_matching)
                future = pool.submit(fetched.body or b"", url=fetched.url,
                                     headers=fetched.headers, language=feed.language,
                                     now=self.clock(),
                                     feed=(feed.name, feed.tags) if behind else None)
                parsing[future] = (feed, fetched)
                outcomes += self._store_parsed(parsing, stop, group,
                                               block=len(parsing) > 2 * pool.workers)
                continue
            group.join()
            outcomes.append(self._record(self.process(feed, fetched)))
            group.tick()
        while parsing:
            outcomes += self._store_parsed(parsing, stop, group, block=True)
        group.join()
        self.store.record_feeds(unchanged)
        return outcomes

    def _store_parsed(
        self, parsing: dict[Future[ParsedFeed | Matched | ParseFailure],
                            tuple[FeedState, FetchResult]],
        stop: threading.Event | None, group: _Group, *, block: bool,
    ) -> list[FeedOutcome]:
        """Match (unless the pool did) and store the documents the pool has parsed (waiting
        for one if ``block``), here in the poller's process, each feed all or nothing."""
        assert self.parse_pool is not None
        done = [f for f in parsing if f.done()]
        if not done and block:
            group.commit()  # before waiting: nothing sits uncommitted while idle
            finished, _ = wait(parsing, return_when=FIRST_COMPLETED)
            done = [f for f in parsing if f in finished]
        outcomes: list[FeedOutcome] = []
        for future in done:
            feed, fetched = parsing.pop(future)
            group.join()
            if stop is not None and stop.is_set():
                self.store.release_feed(feed.id)
                continue
            parsed: ParsedFeed | Matched | FeedError
            try:
                parsed = self.parse_pool.result(fetched.url, future)
            except ParseError as exc:
                parsed = exc
                self.parse_pool.recover()
            outcomes.append(self._record(self.process(feed, fetched, parsed=parsed)))
            group.tick()
        return outcomes

    def _record(self, outcome: FeedOutcome) -> FeedOutcome:
        """Metrics and the poll's log line."""
        metrics.POLLS.labels(outcome.result).inc()
        metrics.ENTRIES.labels("new").inc(outcome.new)
        metrics.ENTRIES.labels("changed").inc(outcome.changed)
        log.log(
            logging.WARNING if outcome.result == "failed" else logging.INFO,
            "poll feed=%s result=%s new=%d changed=%d alerts=%d%s",
            outcome.feed, outcome.result, outcome.new, outcome.changed, outcome.alerts,
            f" error={outcome.error!r}" if outcome.error else "",
            extra={"event": "poll", "feed": outcome.feed, "outcome": outcome.result,
                   "status": outcome.status, "new": outcome.new,
                   "changed": outcome.changed, "alerts": outcome.alerts,
                   "error": outcome.error},
        )
        return outcome

    def process(self, feed: FeedState, fetched: FetchResult | FeedError,
                parsed: ParsedFeed | Matched | FeedError | None = None) -> FeedOutcome:
        """Store what one fetch brought (``parsed``: its document, already parsed by the
        pool, and matched there when it had the rules in force). Expected feed failures
        become data on the feed."""
        now = self.clock()
        if isinstance(fetched, FeedError):
            return self._failed(feed, fetched, now)
        if fetched.not_modified:
            self.store.record_feed(feed.id, self._answered(feed, fetched, now, None))
            return FeedOutcome(feed.name, feed.url, "not_modified", status=304)
        if parsed is None:
            try:
                parsed = parse_feed(
                    fetched.body or b"", url=fetched.url, headers=fetched.headers,
                    language=feed.language, now=now, parser=self.parser,
                )
            except FeedError as exc:
                parsed = exc
        if isinstance(parsed, FeedError):
            return self._failed(feed, parsed, now, status=fetched.status)
        rules = self.rules()
        routes = self.routing.routes(rules)
        found_in_worker: dict[str, tuple[Match, ...]] | None = None
        if isinstance(parsed, Matched):
            if self.parse_pool is not None and self.parse_pool.matched_with(parsed) is rules:
                found_in_worker = {}
                for entry, matched in zip(parsed.feed.entries, parsed.matches, strict=True):
                    found_in_worker.setdefault(storable_key(entry).key, matched)
            parsed = parsed.feed
        parsed_entries = _unique(storable_key(e) for e in parsed.entries)
        # A feed's entries are saved with its first success, so before it there are none.
        stored = ({} if feed.first_success_at is None else
                  self.store.stored_entries(feed.id, (e.key for e in parsed_entries)))
        found = triage(parsed_entries, {k: (v.id, v.content_hash) for k, v in stored.items()})
        first_poll = self.backfill and feed.first_success_at is None
        writes: list[EntryWrite] = []
        candidates: list[Candidate] = []
        for entry_id, entry in [(None, e) for e in found.new] + list(found.changed):
            matched = (found_in_worker[entry.key] if found_in_worker is not None else
                       tuple(rules.match(entry, feed_name=feed.name, feed_tags=feed.tags)))
            for match in matched:
                metrics.MATCHES.labels(match.rule_id).inc()
            writes.append(EntryWrite(entry, entry_id, matched, rules.tracked(matched)))
            if in_backfill(entry, first_poll=first_poll, now=now, window=self.backfill_window):
                continue
            candidates.append(Candidate(entry, entry_id, matched))
        outbox = self._plan_outbox(feed, candidates, routes, now)
        saved = self.store.save_poll(PollWrite(
            feed_id=feed.id, now=now, entries=tuple(writes),
            alerts=tuple(AlertWrite(a.entry_key, a.channel, a.rules, a.hits)
                         for a in outbox.alerts),
            replies=outbox.replies, updates=outbox.updates,
            feed=self._answered(feed, fetched, now, parsed),
        ))
        self._file_own(feed, saved.reports, {c.entry.key: c.entry for c in candidates}, now)
        return FeedOutcome(feed.name, feed.url, "ok", new=saved.new_entries,
                           changed=saved.changed_entries, alerts=saved.alerts,
                           status=fetched.status)

    def _plan_outbox(self, feed: FeedState, candidates: Sequence[Candidate],
                     routes: Mapping[str, RuleRoute], now: datetime) -> OutboxPlan:
        """Alerts, thread replies and updates for this poll (bot.plan), read against the
        channels' recent stories and the changed entries' previous state."""
        if not candidates:
            return OutboxPlan()
        channels = {c for route in routes.values() for c in route.channels}
        changed = [c.entry_id for c in candidates if c.entry_id is not None]
        return plan_outbox(
            candidates, routes, feed_name=feed.name, now=now,
            threads=self._story_index(channels, now),
            previous=self.store.previous_entries(changed),
        )

    def _story_index(self, channels: set[str], now: datetime) -> StoryIndex:
        """The channels' recent stories: read in full at a cycle's first alert, then only the
        rows written since (by this cycle's earlier polls, or by a replica). Comparing every
        entry with the whole window per feed made a cold cycle quadratic (issue 7).

        Rows are read by id. On PostgreSQL a replica's row can commit after a higher id was
        read; it is then seen from the next cycle on: at worst a story that two replicas
        poll at the same moment is two alerts instead of an alert and a thread reply, as
        when both read before either commits."""
        since = now - DUPLICATE_WINDOW
        cached = self._stories
        if cached is None or cached.channels != channels:
            reports, last_id = self.store.reports_after(channels, since)
            self._stories = cached = _Stories(frozenset(channels), StoryIndex(reports), last_id)
        elif not self._sole_writer:
            reports, cached.last_id = self.store.reports_after(channels, since, cached.last_id)
            cached.index.add(reports)
        return cached.index

    @property
    def _sole_writer(self) -> bool:
        """On SQLite this process is the only one writing alerts (DESIGN.md, Scale), so after
        the cycle's first read the index needs only what this process wrote: each poll files
        its own reports (:meth:`_file_own`) instead of reading them back (issue 7)."""
        return self.store.engine.dialect.name == "sqlite"

    def _file_own(self, feed: FeedState, written: Sequence[Written],
                  entries: Mapping[str, Entry], now: datetime) -> None:
        """File a poll's first alerts and duplicate replies in the cycle's story index, as
        ``reports_after`` would read them back (created at ``now``, by this feed)."""
        cached = self._stories
        if not written or cached is None or not self._sole_writer:
            return
        cached.index.add(Report(
            thread_id=w.thread_id or 0, channel=w.channel, feed_name=feed.name,
            link=entries[w.entry_key].link, title=entries[w.entry_key].title, at=now,
            first=w.first, independent=w.independent)
            for w in written if w.channel in cached.channels and w.thread_id is not None)

    def _answered(self, feed: FeedState, fetched: FetchResult, now: datetime,
                  parsed: ParsedFeed | None) -> FeedUpdate:
        """The feed's state after a 200 that parsed (``parsed``) or a 304 (None)."""
        # A 301/308 is adopted on its 3rd poll in a row: the target passed the address guard
        # (every hop does) and parsed as a feed (this 200, or the one whose validators the
        # 304 answered). 302/307 never set permanent_url.
        redirect = track_redirect(feed.redirect_url, feed.redirect_polls, fetched.permanent_url)
        if redirect.adopt:
            log.warning("feed=%s moved permanently to %s (seen on %d polls in a row); now "
                        "polling the new URL: update feeds.yaml", feed.name, redirect.target,
                        redirect.polls)
        rhythm = last_entry = None
        if parsed is not None:
            dates = [e.published or e.updated for e in parsed.entries]
            rhythm = publishing_rhythm(dates, now=now)
            newest = max((d for d in dates if d is not None and d <= now), default=None)
            last_entry = max((d for d in (feed.last_entry_at, newest) if d is not None),
                             default=None)
        interval = effective_interval(feed.interval, rhythm or feed.rhythm,
                                      adaptive=self.adaptive_interval)
        return FeedUpdate(
            polled_at=now, next_poll_at=next_poll_after(now, interval, fetched.headers),
            status=fetched.status, etag=fetched.etag, last_modified=fetched.last_modified,
            title=parsed.title if parsed is not None else None,
            redirect_url=None if redirect.adopt else redirect.target,
            redirect_polls=0 if redirect.adopt else redirect.polls,
            adopt_url=redirect.target if redirect.adopt else None,
            rhythm=rhythm, last_entry_at=last_entry,
        )

    def _failed(
        self, feed: FeedState, error: FeedError, now: datetime, status: int | None = None
    ) -> FeedOutcome:
        status = error.status if error.status is not None else status
        next_at = backoff(now, feed.consecutive_failures + 1, feed.interval)
        wait_until = None
        if isinstance(error, HTTPStatusError) and status in (429, 503):
            # The server said when to come back; `poll` respects it too.
            wait_until = retry_after(error.headers.get("retry-after"), now)
            if wait_until is not None:
                next_at = max(next_at, wait_until)
        gone = status == 410  # never polled again until an operator re-enables it
        message = error.message + (" (gone: no longer polled)" if gone else "")
        self.store.record_feed(feed.id, FeedUpdate(
            polled_at=now, next_poll_at=next_at, status=status, success=False, error=message,
            error_kind=error.kind, retry_after_until=wait_until, gone=gone))
        return FeedOutcome(feed.name, feed.url, "failed", error=message, status=status)


class _Group:
    """Feeds stored one after another in one open transaction (``Store.unit``), on SQLite:
    one commit — an fsync — for several feeds instead of one each (issue 7). Each feed's
    writes stay all or nothing, and a failure rolls back the whole group: its feeds are
    polled again, as after a crash. The group is committed whenever the poller is about to
    wait (for a fetch or the parse pool), after ``GROUP_SECONDS``, and at the end of a
    batch, so SQLite's write lock is held only while the poller computes and alerts reach
    the outbox without delay."""

    GROUP_SECONDS = 0.25

    def __init__(self, store: Store, *, enabled: bool,
                 stored: Callable[[], None] | None = None) -> None:
        self._store = store
        self._enabled = enabled
        self._stored = stored  # told after each commit (or each feed, when not grouping)
        self._open: contextlib.ExitStack | None = None
        self._since = 0.0

    def __enter__(self) -> _Group:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._open is not None:
            stack, self._open = self._open, None
            stack.__exit__(*exc)  # commit, or roll back on an exception
            if exc[0] is None and self._stored is not None:
                self._stored()

    def join(self) -> None:
        """Open the group (if on, and not open) before a store call."""
        if self._enabled and self._open is None:
            stack = contextlib.ExitStack()
            stack.enter_context(self._store.unit())
            self._open, self._since = stack, time.monotonic()

    def tick(self) -> None:
        """After a feed's poll."""
        if not self._enabled:
            if self._stored is not None:
                self._stored()  # each feed committed its own transaction
        elif self._open is not None and time.monotonic() - self._since >= self.GROUP_SECONDS:
            self.commit()

    def commit(self) -> None:
        if self._open is not None:
            stack, self._open = self._open, None
            stack.close()
            if self._stored is not None:
                self._stored()


def _unique(items: Iterable[Entry]) -> list[Entry]:
    """First occurrence wins when two entries share a key (after key shortening)."""
    seen: dict[str, Entry] = {}
    for entry in items:
        seen.setdefault(entry.key, entry)
    return list(seen.values())
