"""When feeds are polled: the pure rules of bot.schedule, then the same rules end to end with
a fake clock (loopback feeds, a real database, no sleeping)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import FakeClock
from feedserver import FeedServer, Item, rss
from test_pipeline import rules_dir

from bot.app import App, open_app
from bot.config import Settings
from bot.decide import BACKOFF_CAP, backoff
from bot.schedule import (
    MAX_NEXT_POLL,
    assess,
    effective_interval,
    fresh_until,
    next_poll_after,
    publishing_rhythm,
    track_redirect,
)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
HALF_HOUR = timedelta(minutes=30)


def no_jitter() -> float:
    return 0.0


# -- pure: freshness and the next poll -----------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"cache-control": "max-age=3600"}, NOW + timedelta(hours=1)),
        ({"cache-control": "public, max-age=7200", "age": "3600"}, NOW + timedelta(hours=1)),
        ({"cache-control": "no-cache, max-age=7200"}, None),
        ({"cache-control": "no-store"}, None),
        ({"expires": "Wed, 25 Nov 2026 12:00:00 GMT"}, NOW + timedelta(hours=3)),
        # Expires read against the server's Date: a server 5 h fast gives 2 h, not -3 h.
        ({"expires": "Wed, 25 Nov 2026 16:00:00 GMT", "date": "Wed, 25 Nov 2026 14:00:00 GMT"},
         NOW + timedelta(hours=2)),
        ({"cache-control": "max-age=60", "expires": "Wed, 25 Nov 2026 12:00:00 GMT"},
         NOW + timedelta(minutes=1)),
        ({"expires": "0"}, None),
        ({}, None),
    ],
)
def test_freshness_from_max_age_or_expires(headers: dict[str, str],
                                           expected: datetime | None) -> None:
    assert fresh_until(headers, NOW) == expected


def test_the_next_poll_is_the_latest_of_interval_max_age_expires_and_retry_after() -> None:
    assert next_poll_after(NOW, HALF_HOUR, {}, rng=no_jitter) == NOW + HALF_HOUR
    assert next_poll_after(NOW, HALF_HOUR, {"cache-control": "max-age=60"},
                           rng=no_jitter) == NOW + HALF_HOUR, "never sooner than the interval"
    assert next_poll_after(NOW, HALF_HOUR, {"cache-control": "max-age=7200"},
                           rng=no_jitter) == NOW + timedelta(hours=2)
    assert next_poll_after(NOW, HALF_HOUR, {"retry-after": "10800"},
                           rng=no_jitter) == NOW + timedelta(hours=3)
    assert next_poll_after(NOW, HALF_HOUR, {"retry-after": "Wed, 25 Nov 2026 13:00:00 GMT",
                                            "cache-control": "max-age=3600"},
                           rng=no_jitter) == NOW + timedelta(hours=4)


def test_the_next_poll_is_capped_at_seven_days_jitter_included() -> None:
    headers = {"cache-control": "max-age=99999999"}
    assert next_poll_after(NOW, HALF_HOUR, headers, rng=no_jitter) == NOW + MAX_NEXT_POLL
    assert next_poll_after(NOW, HALF_HOUR, headers, rng=lambda: 1.0) == NOW + MAX_NEXT_POLL


def test_jitter_adds_at_most_a_tenth_of_the_delay() -> None:
    headers = {"cache-control": "max-age=36000"}
    assert next_poll_after(NOW, HALF_HOUR, headers, rng=lambda: 1.0) == NOW + timedelta(hours=11)
    assert next_poll_after(NOW, HALF_HOUR, headers, rng=lambda: 0.5) == NOW + timedelta(
        hours=10, minutes=30)


@pytest.mark.parametrize("failures", [1, 2, 3, 4, 5, 6, 7, 12, 40])
def test_backoff_doubles_with_each_failure_and_stops_at_24_hours(failures: int) -> None:
    high = backoff(NOW, failures, HALF_HOUR, rng=lambda: 1.0) - NOW
    low = backoff(NOW, failures, HALF_HOUR, rng=no_jitter) - NOW
    assert high == min(HALF_HOUR * 2 ** min(failures - 1, 16), BACKOFF_CAP)
    assert low == high / 2, "full jitter over the upper half"


# -- pure: rhythm, adaptive interval, redirects, health ------------------------------------


def test_the_rhythm_is_the_median_gap_between_items_ignoring_future_ones() -> None:
    dates = [NOW - timedelta(hours=h) for h in (1, 3, 5, 7, 40)] + [NOW + timedelta(days=9)]
    assert publishing_rhythm(dates, now=NOW) == timedelta(hours=2)
    assert publishing_rhythm(dates[:3] + [None], now=NOW) is None, "too few dated items"


def test_the_adaptive_interval_follows_the_rhythm_between_the_interval_and_six_hours() -> None:
    assert effective_interval(HALF_HOUR, timedelta(days=7), adaptive=False) == HALF_HOUR
    assert effective_interval(HALF_HOUR, None, adaptive=True) == HALF_HOUR
    assert effective_interval(HALF_HOUR, timedelta(hours=8), adaptive=True) == timedelta(hours=2)
    assert effective_interval(HALF_HOUR, timedelta(minutes=10), adaptive=True) == HALF_HOUR
    assert effective_interval(HALF_HOUR, timedelta(days=7), adaptive=True) == timedelta(hours=6)
    daily = timedelta(days=1)
    assert effective_interval(daily, timedelta(days=30), adaptive=True) == daily


def test_a_permanent_redirect_is_adopted_on_the_third_poll_in_a_row() -> None:
    first = track_redirect(None, 0, "https://new.example/feed")
    second = track_redirect(first.target, first.polls, "https://new.example/feed")
    third = track_redirect(second.target, second.polls, "https://new.example/feed")
    assert [(r.polls, r.adopt) for r in (first, second, third)] == [
        (1, False), (2, False), (3, True)]
    elsewhere = track_redirect(second.target, second.polls, "https://other.example/feed")
    assert (elsewhere.polls, elsewhere.adopt) == (1, False), "another target starts again"
    assert track_redirect(second.target, second.polls, None).polls == 0, "a break resets"


@dataclass
class Facts:
    enabled: bool = True
    removed: bool = False
    gone: bool = False
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    last_success_at: datetime | None = NOW - timedelta(hours=1)
    last_entry_at: datetime | None = None
    rhythm: timedelta | None = None


def test_health_stale_after_failing_longer_than_stale_after() -> None:
    two_days = timedelta(hours=48)
    fresh = Facts(consecutive_failures=3, failing_since=NOW - timedelta(hours=47))
    old = Facts(consecutive_failures=30, failing_since=NOW - timedelta(hours=49))
    assert assess(fresh, NOW, stale_after=two_days).state == "failing"
    stale = assess(old, NOW, stale_after=two_days)
    assert (stale.state, stale.bad) == ("stale", True)
    assert stale.reason == "failing for 2d (30 polls in a row)"


def test_health_silent_when_quiet_for_far_longer_than_its_rhythm() -> None:
    daily = Facts(rhythm=timedelta(days=1), last_entry_at=NOW - timedelta(days=6))
    assert assess(daily, NOW, stale_after=timedelta(hours=48)).state == "silent"
    assert "usually publishes every 1d" in assess(daily, NOW, stale_after=timedelta(1)).reason
    recent = Facts(rhythm=timedelta(days=1), last_entry_at=NOW - timedelta(days=4))
    assert assess(recent, NOW, stale_after=timedelta(hours=48)).state == "ok"
    hourly = Facts(rhythm=timedelta(hours=1), last_entry_at=NOW - timedelta(hours=20))
    assert assess(hourly, NOW, stale_after=timedelta(hours=48)).state == "ok", "a night off"


def test_gone_disabled_and_removed_come_first() -> None:
    two_days = timedelta(hours=48)
    assert assess(Facts(gone=True), NOW, stale_after=two_days).state == "gone"
    assert assess(Facts(enabled=False, gone=True), NOW, stale_after=two_days).state == "disabled"
    assert assess(Facts(removed=True), NOW, stale_after=two_days).state == "removed"
    assert assess(Facts(last_success_at=None), NOW, stale_after=two_days).state == "new"


# -- end to end with a fake clock ----------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, db_url: str, feed_server: FeedServer) -> Settings:
    return Settings(
        database_url=db_url,
        rules_dir=rules_dir(tmp_path, [("mofa", feed_server.url("/feed.xml"))]),
        allow_private_addresses=True,
    )


@pytest.fixture
def bot(settings: Settings, clock: FakeClock) -> Iterator[App]:
    with open_app(settings, clock=clock, sleep=clock.sleep) as app:
        yield app


def feed(bot: App) -> object:
    (state,) = bot.store.list_feeds()
    return state


def items(clock: FakeClock, n: int = 2, every: timedelta = timedelta(hours=1)) -> bytes:
    return rss([Item(f"Item {i}", guid=f"g{i}", published=clock() - every * (i + 1))
                for i in range(n)])


def test_max_age_is_stored_and_a_restart_does_not_poll_early(
    settings: Settings, clock: FakeClock, feed_server: FeedServer
) -> None:
    feed_server.serve("/feed.xml", items(clock), headers={"Cache-Control": "max-age=10800"})
    with open_app(settings, clock=clock) as bot:
        assert [o.result for o in bot.poller.cycle()] == ["ok"]
        next_at = bot.store.list_feeds()[0].next_poll_at
        assert clock() + timedelta(hours=3) <= next_at <= clock() + timedelta(hours=3.3)
    clock.advance(hours=2, minutes=59)
    with open_app(settings, clock=clock) as restarted:
        assert restarted.poller.cycle() == [], "restarted: still not due"
        clock.advance(hours=0.4)
        assert [o.result for o in restarted.poller.cycle()] == ["ok"]
    assert len(feed_server.requests) == 2


def test_max_age_on_a_304_counts_too(
    bot: App, clock: FakeClock, feed_server: FeedServer
) -> None:
    feed_server.serve("/feed.xml", items(clock), etag='"v1"',
                      headers={"Cache-Control": "max-age=86400"})
    bot.poller.cycle()
    clock.advance(days=1.2)
    assert [o.result for o in bot.poller.cycle()] == ["not_modified"]
    assert feed(bot).next_poll_at >= clock() + timedelta(days=1)  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["7200", "Wed, 25 Nov 2026 11:00:00 GMT"])
def test_a_503_with_retry_after_in_either_form_waits_that_long(
    bot: App, clock: FakeClock, feed_server: FeedServer, value: str
) -> None:
    feed_server.status("/feed.xml", 503, headers={"Retry-After": value})
    bot.poller.cycle()
    state = feed(bot)
    assert state.retry_after_until == clock() + timedelta(hours=2)  # type: ignore[attr-defined]
    clock.advance(hours=1, minutes=59)
    assert bot.poller.cycle() == [] and bot.poller.cycle(force=True) == []
    clock.advance(minutes=2)
    assert len(bot.poller.cycle(force=True)) == 1


def test_a_429_without_retry_after_backs_off(
    bot: App, clock: FakeClock, feed_server: FeedServer
) -> None:
    feed_server.status("/feed.xml", 429)
    bot.poller.cycle()
    state = feed(bot)
    assert state.retry_after_until is None  # type: ignore[attr-defined]
    assert state.next_poll_at >= clock() + timedelta(minutes=15)  # type: ignore[attr-defined]


def test_backoff_grows_poll_after_poll_and_stops_at_a_day(
    bot: App, clock: FakeClock, feed_server: FeedServer
) -> None:
    feed_server.status("/feed.xml", 500)
    waits = []
    for _ in range(9):
        before = clock()
        bot.poller.cycle(force=True)
        state = feed(bot)
        waits.append(state.next_poll_at - before)  # type: ignore[attr-defined]
        clock.now = state.next_poll_at  # type: ignore[attr-defined]
    assert waits[0] <= timedelta(minutes=30) and waits[1] >= timedelta(minutes=30)
    assert all(w <= timedelta(hours=24) for w in waits)
    assert waits[-1] >= timedelta(hours=12), "capped at 24 h, jitter on the upper half"
    assert feed(bot).consecutive_failures == 9  # type: ignore[attr-defined]


def test_a_301_seen_on_three_polls_in_a_row_moves_the_feed(
    bot: App, clock: FakeClock, feed_server: FeedServer
) -> None:
    feed_server.redirect("/feed.xml", "/new.xml", 301)
    feed_server.serve("/new.xml", items(clock))
    for poll in (1, 2):
        bot.poller.cycle(force=True)
        state = feed(bot)
        assert state.url == feed_server.url("/feed.xml"), poll  # type: ignore[attr-defined]
        assert state.redirect_polls == poll  # type: ignore[attr-defined]
        clock.advance(hours=1)
    bot.poller.cycle(force=True)
    state = feed(bot)
    assert state.url == feed_server.url("/new.xml")  # type: ignore[attr-defined]
    assert state.declared_url == feed_server.url("/feed.xml")  # type: ignore[attr-defined]
    clock.advance(hours=1)
    bot.poller.cycle(force=True)
    assert feed_server.requests[-1].path == "/new.xml"
    assert feed_server.paths().count("/feed.xml") == 3
    # A restart re-reads feeds.yaml: the adopted URL stays (the declaration did not change).
    assert not bot.feeds.refresh()


def test_a_302_never_moves_the_feed(bot: App, clock: FakeClock, feed_server: FeedServer) -> None:
    feed_server.redirect("/feed.xml", "/new.xml", 302)
    feed_server.serve("/new.xml", items(clock))
    for _ in range(4):
        bot.poller.cycle(force=True)
        clock.advance(hours=1)
    state = feed(bot)
    assert state.url == feed_server.url("/feed.xml")  # type: ignore[attr-defined]
    assert state.redirect_polls == 0  # type: ignore[attr-defined]


def test_a_301_to_something_that_is_not_a_feed_is_never_adopted(
    bot: App, clock: FakeClock, feed_server: FeedServer
) -> None:
    feed_server.redirect("/feed.xml", "/home.html", 301)
    feed_server.serve("/home.html", "<!doctype html><html><body>Moved</body></html>",
                      content_type="text/html")
    for _ in range(4):
        bot.poller.cycle(force=True)
        clock.advance(hours=1)
    state = feed(bot)
    assert state.url == feed_server.url("/feed.xml")  # type: ignore[attr-defined]
    assert state.last_error_kind == "parse"  # type: ignore[attr-defined]


def test_the_adaptive_interval_polls_a_weekly_feed_less_often(
    settings: Settings, clock: FakeClock, feed_server: FeedServer
) -> None:
    feed_server.serve("/feed.xml", items(clock, n=6, every=timedelta(days=7)))
    with open_app(settings.model_copy(update={"adaptive_interval": True}),
                  clock=clock) as bot:
        bot.poller.cycle()
        state = bot.store.list_feeds()[0]
    assert state.rhythm == timedelta(days=7)
    assert state.next_poll_at >= clock() + timedelta(hours=6)


@pytest.mark.parametrize("module", ["schedule.py", "charset.py", "parse.py", "decide.py"])
def test_the_scheduling_and_decoding_core_is_pure(module: str) -> None:
    import ast

    source = Path(__file__).parent.parent / "bot" / module
    tree = ast.parse(source.read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    forbidden = ("bot.fetch", "bot.store", "bot.notify", "bot.cli", "bot.scheduler", "httpx",
                 "sqlalchemy", "socket")
    assert not [m for m in imported if m.startswith(forbidden)]


def test_validators_sent_with_a_304_replace_the_stored_ones(
    bot: App, clock: FakeClock, feed_server: FeedServer
) -> None:
    feed_server.serve("/feed.xml", items(clock), etag='"v1"')
    bot.poller.cycle()
    feed_server.route("/feed.xml", lambda h: h.send_bytes(304, b"", None, {"ETag": '"v2"'}))
    clock.advance(hours=1)
    assert [o.result for o in bot.poller.cycle()] == ["not_modified"]
    assert feed_server.requests[-1].headers["if-none-match"] == '"v1"'
    assert feed(bot).etag == '"v2"'  # type: ignore[attr-defined]
    clock.advance(hours=1)
    bot.poller.cycle()
    assert feed_server.requests[-1].headers["if-none-match"] == '"v2"'


# -- stopping ------------------------------------------------------------------------------


def test_a_sigterm_that_lands_on_another_thread_still_stops_the_service(
    settings: Settings, feed_server: FeedServer
) -> None:
    """The kernel may hand a process's SIGTERM to any of its threads; Python runs the handler
    on the main thread only, which must not sleep through it (CI saw `run --web` hang so)."""
    import logging
    import signal
    import threading

    from bot.scheduler import run_service

    feed_server.serve("/feed.xml", rss([]))
    stop = threading.Event()
    handled: list[int] = []
    running = threading.Event()
    fell_back: list[bool] = []

    class Running(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("policybot running"):
                running.set()

    def handle(signum: int, _frame: object) -> None:
        handled.append(signum)
        stop.set()

    def signal_from_a_worker_thread() -> None:
        running.wait()
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        # A safety limit, not a synchronisation: without it a regression hangs the suite.
        if not stop.wait(60):
            fell_back.append(True)
            stop.set()

    watcher, logger = Running(), logging.getLogger("bot.scheduler")
    level = logger.level
    logger.addHandler(watcher)
    logger.setLevel(logging.INFO)
    previous = signal.signal(signal.SIGTERM, handle)
    sender = threading.Thread(target=signal_from_a_worker_thread)
    try:
        sender.start()
        with open_app(settings) as app:
            run_service(app, stop)
    finally:
        running.set()
        sender.join()
        signal.signal(signal.SIGTERM, previous)
        logger.removeHandler(watcher)
        logger.setLevel(level)
    assert handled == [signal.SIGTERM]
    assert not fell_back, "the main thread slept through a SIGTERM handled on another thread"
