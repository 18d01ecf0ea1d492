"""One poll cycle: ``due feeds | fetch | parse | decide | match | plan alerts | store``.

The pipeline moves data and makes no choices: every decision is in ``bot.decide`` (pure), every
match in ``bot.rules`` (pure). Each feed's results are written in one transaction, after which
the delivery loop (``bot.notify.delivery``) posts the alerts it wrote.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot import metrics
from bot.decide import (
    RuleRoute,
    backoff,
    in_backfill,
    retry_after,
    storable_key,
    triage,
)
from bot.errors import ConfigError, FeedError
from bot.fetch import Fetcher, FetchRequest, HTTPStatusError
from bot.model import AlertRule, Entry, FetchResult
from bot.parse import ParsedFeed, parse_feed
from bot.plan import DUPLICATE_WINDOW, Candidate, OutboxPlan, plan_outbox
from bot.rules import RuleSet
from bot.schedule import effective_interval, next_poll_after, publishing_rhythm, track_redirect
from bot.store import AlertWrite, EntryWrite, FeedState, FeedUpdate, PollWrite, Store

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

    def cycle(
        self, *, force: bool = False, url: str | None = None,
        stop: threading.Event | None = None,
    ) -> list[FeedOutcome]:
        """Poll the due feeds (or every active feed with ``force``; or the one at ``url``).

        Feeds are claimed in batches, so that a cycle streams through thousands of feeds
        without holding them all, and replicas share the work as they go.
        """
        started = self.clock()
        outcomes: list[FeedOutcome] = []
        while stop is None or not stop.is_set():
            feeds = self.store.feeds_to_poll(
                self.clock(), force=force, url=url, lease=self.lease, owner=self.owner,
                limit=self.claim_batch, polled_before=started)
            if not feeds:
                break
            outcomes += self.poll_feeds(feeds, stop=stop)
        return outcomes

    def poll_feeds(
        self, feeds: Sequence[FeedState], *, stop: threading.Event | None = None
    ) -> list[FeedOutcome]:
        by_id = {f.id: f for f in feeds}
        requests = [
            FetchRequest(key=f.id, url=f.url, etag=f.etag, last_modified=f.last_modified)
            for f in feeds
        ]
        outcomes: list[FeedOutcome] = []
        for request, fetched in self.fetcher.fetch_many(requests):
            feed = by_id[int(request.key)]
            if stop is not None and stop.is_set():
                # Shutting down: leave the feed due (its lease expires); nothing is lost.
                self.store.release_feed(feed.id)
                continue
            outcome = self.process(feed, fetched)
            outcomes.append(outcome)
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
        return outcomes

    def process(self, feed: FeedState, fetched: FetchResult | FeedError) -> FeedOutcome:
        """Store what one fetch brought. Expected feed failures become data on the feed."""
        now = self.clock()
        if isinstance(fetched, FeedError):
            return self._failed(feed, fetched, now)
        if fetched.not_modified:
            self.store.record_feed(feed.id, self._answered(feed, fetched, now, None))
            return FeedOutcome(feed.name, feed.url, "not_modified", status=304)
        try:
            parsed = parse_feed(
                fetched.body or b"", url=fetched.url, headers=fetched.headers,
                language=feed.language, now=now,
            )
        except FeedError as exc:
            return self._failed(feed, exc, now, status=fetched.status)
        rules = self.rules()
        routes = self.routing.routes(rules)
        parsed_entries = _unique(storable_key(e) for e in parsed.entries)
        stored = self.store.stored_entries(feed.id, (e.key for e in parsed_entries))
        found = triage(parsed_entries, {k: (v.id, v.content_hash) for k, v in stored.items()})
        first_poll = self.backfill and feed.first_success_at is None
        writes: list[EntryWrite] = []
        candidates: list[Candidate] = []
        for entry_id, entry in [(None, e) for e in found.new] + list(found.changed):
            matched = tuple(rules.match(entry, feed_name=feed.name, feed_tags=feed.tags))
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
            threads=self.store.recent_reports(channels, now - DUPLICATE_WINDOW),
            previous=self.store.previous_entries(changed),
        )

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


def _unique(items: Iterable[Entry]) -> list[Entry]:
    """First occurrence wins when two entries share a key (after key shortening)."""
    seen: dict[str, Entry] = {}
    for entry in items:
        seen.setdefault(entry.key, entry)
    return list(seen.values())
