"""Wiring: turn Settings into the store, fetcher, sender, rules and poller that commands use."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.console import Console

from bot.config import Settings
from bot.fetch import Fetcher, FetchLimits
from bot.notify import ConsoleSender, Sender, SlackBotSender, WebhookSender
from bot.notify.delivery import Deliverer
from bot.notify.ops import OpsAnnouncer, Post, slack_poster
from bot.parse import fast_parser_available
from bot.parsepool import ParsePool, auto_workers
from bot.pipeline import Poller, Routing
from bot.store import Store, make_engine, upgrade
from bot.watch import FeedsSync, RulesHolder

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def make_sender(settings: Settings, console: Console | None = None) -> Sender:
    if settings.slack_bot_token is not None:
        return SlackBotSender(settings.slack_bot_token.get_secret_value(),
                              base_url=settings.slack_api_url)
    if settings.slack_webhook_url is not None:
        return WebhookSender(settings.slack_webhook_url.get_secret_value())
    return ConsoleSender(console)


def make_ops_poster(settings: Settings) -> Post | None:
    """Where feed-health messages go: the ops channel with a bot token, else the log."""
    if settings.slack_ops_channel is None or settings.slack_bot_token is None:
        return None
    return slack_poster(settings.slack_bot_token.get_secret_value(),
                        settings.slack_ops_channel, base_url=settings.slack_api_url)


def make_routing(settings: Settings) -> Routing:
    mode = settings.delivery_mode
    if mode == "slack":
        return Routing(default_channel=settings.slack_channel)
    # One destination: a webhook posts to its own channel; the console is one terminal.
    return Routing(single_channel=mode)


def fetch_limits(settings: Settings) -> FetchLimits:
    return FetchLimits(
        connect_timeout=min(10.0, settings.fetch_timeout),
        read_timeout=settings.fetch_timeout,
        deadline=settings.fetch_deadline,
        max_body_bytes=int(settings.max_body_mb * 1024 * 1024),
        max_connections=settings.fetch_concurrency,
        max_per_host=settings.fetch_per_host,
    )


@dataclass
class App:
    settings: Settings
    store: Store
    fetcher: Fetcher
    sender: Sender
    rules: RulesHolder
    feeds: FeedsSync
    poller: Poller
    deliverer: Deliverer
    clock: Callable[[], datetime]
    ops: OpsAnnouncer | None = None  # feed health to the ops channel (issue 5)


@contextlib.contextmanager
def open_app(
    settings: Settings,
    *,
    console: Console | None = None,
    clock: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    migrate: bool = True,
    backfill: bool = True,
) -> Iterator[App]:
    """Everything a command needs, closed on exit. Migrates the database first when asked
    (SQLite by default: an embedded database should just work)."""
    engine = make_engine(settings.database_url)
    try:
        if migrate:
            upgrade(engine)
        store = Store(engine)
        rules = RulesHolder(settings.rules_dir)
        rules.load()
        feeds = FeedsSync(settings.rules_dir / "feeds.yaml", store, clock)
        feeds.refresh(strict=True)
        sender = make_sender(settings, console)
        if settings.parser == "fast" and not fast_parser_available():
            log.warning("POLICYBOT_PARSER=fast but feedparser-rs is not installed "
                        "(pip install 'policybot[fast]'); parsing with feedparser")
        workers = (auto_workers() if settings.parse_workers is None
                   else settings.parse_workers)
        with Fetcher(fetch_limits(settings),
                     allow_private=settings.allow_private_addresses) as fetcher, \
                contextlib.ExitStack() as stack:
            # Workers start at the first document to parse, not here (a warm cycle has none).
            pool = stack.enter_context(ParsePool(workers, settings.parser)) if workers else None
            poller = Poller(
                store=store, fetcher=fetcher, rules=rules, routing=make_routing(settings),
                clock=clock, backfill_window=timedelta(hours=settings.backfill_alert_window_hours),
                backfill=backfill, adaptive_interval=settings.adaptive_interval,
                lease=timedelta(seconds=max(settings.claim_lease_seconds,
                                            2 * settings.fetch_deadline)),
                claim_batch=4 * settings.fetch_concurrency,
                parser=settings.parser, parse_pool=pool,
            )
            deliverer = Deliverer(store=store, sender=sender, clock=clock, sleep=sleep,
                                  pace=0.0 if sender.name == "console" else 1.0,
                                  flood_cap=settings.max_alerts_per_cycle,
                                  # One claim per post: a row is `sending` only while its
                                  # request is in flight, far within the claim lease.
                                  batch=1,
                                  claim_lease=None if engine.dialect.name == "sqlite"
                                  else timedelta(seconds=settings.claim_lease_seconds))
            ops = OpsAnnouncer(store, make_ops_poster(settings), clock,
                               timedelta(hours=settings.stale_after_hours))
            yield App(settings, store, fetcher, sender, rules, feeds, poller, deliverer, clock,
                      ops=ops)
    finally:
        engine.dispose()
