"""What makes a cycle fast must not change what it does (issue 7; timings are in bench/).

- Parsing in worker processes (POLICYBOT_PARSE_WORKERS) stores what parsing in the poller's
  process stores, and a document that is not a feed still fails only its feed.
- Both parser backends store the same entries.
- HTTP connections are kept alive from one cycle to the next (304s included), and the pool
  never closes a connection it has handed to a request (encode/httpcore#1110).
- A warm cycle's 304s are saved (next poll, validators kept) even though they are written
  together.
- Matching in the parse workers stores what matching in the poller stores, and a result
  matched with rules that are no longer in force is matched again.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpcore
import pytest
from conftest import ROOT, FakeClock
from feedserver import FeedServer, Item, atom, rss
from httpcore._sync.connection_pool import PoolRequest
from sqlalchemy import select

from bot.app import App, open_app
from bot.config import Settings
from bot.fetch import _ConnectionPool
from bot.model import Entry
from bot.parse import fast_parser_available
from bot.parsepool import Matched, ParsePool
from bot.rules import RuleSet
from bot.rules.load import load_rules
from bot.store.tables import alerts, entries, matches


def items(clock: FakeClock, feed: int) -> list[Item]:
    when = clock() - timedelta(hours=2)
    return [Item(title=f"Japan to provide OSA radars, part {feed}-{i}",
                 link=f"https://example.org/{feed}/{i}", guid=f"{feed}-{i}",
                 description=f"<p>Official Security Assistance &amp; radars {i}.</p>",
                 published=when - timedelta(minutes=i)) for i in range(5)]


def serve(server: FeedServer, clock: FakeClock, n: int = 6) -> list[tuple[str, str]]:
    feeds = []
    for feed in range(n):
        path = f"/f{feed}.xml"
        body = atom(items(clock, feed)) if feed % 2 else rss(items(clock, feed))
        server.serve(path, body, etag=f'"e{feed}"', content_type="application/xml")
        feeds.append((f"feed-{feed}", server.url(path)))
    server.serve("/page.xml", b"<html><body>not a feed</body></html>", etag='"p"',
                 content_type="text/html")
    feeds.append(("page", server.url("/page.xml")))
    return feeds


@contextmanager
def app(tmp_path: Path, name: str, db_url: str, feeds: list[tuple[str, str]],
        clock: FakeClock, **settings: object) -> Iterator[App]:
    rules = tmp_path / name / "rules"
    shutil.copytree(ROOT / "rules", rules)
    lines = ["feeds:"] + [f"  - {{name: {n}, url: '{u}'}}" for n, u in feeds]
    (rules / "feeds.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    values = {"database_url": db_url, "rules_dir": rules, "allow_private_addresses": True,
              **settings}
    with open_app(Settings(**values), clock=clock, sleep=clock.sleep) as bot:  # type: ignore[arg-type]
        yield bot


def stored(bot: App) -> list[tuple[object, ...]]:
    with bot.store.engine.connect() as conn:
        rows = conn.execute(entries.select().order_by(entries.c.key)).all()
    return [(r.key, r.title, r.link, r.summary, r.content_hash, r.published) for r in rows]


def sqlite_url(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}.db"


@pytest.mark.parametrize("workers", [1, 2])
def test_parsing_in_worker_processes_stores_what_inline_parsing_stores(
    tmp_path: Path, feed_server: FeedServer, clock: FakeClock, workers: int,
) -> None:
    feeds = serve(feed_server, clock)
    results = []
    for name, n in (("inline", 0), ("pool", workers)):
        with app(tmp_path, name, sqlite_url(tmp_path, name), feeds, clock,
                 parse_workers=n) as bot:
            assert (bot.poller.parse_pool is None) == (n == 0)
            outcomes = bot.poller.cycle(force=True)
            results.append((sorted((o.feed, o.result, o.new, o.alerts, o.error)
                                   for o in outcomes), stored(bot)))
    assert results[0] == results[1]
    summary = results[1][0]
    assert summary[-1][:2] == ("page", "failed") and "HTML page" in str(summary[-1][-1])
    assert len(results[1][1]) == 30


@pytest.mark.skipif(not fast_parser_available(), reason="feedparser-rs not installed")
def test_both_parsers_store_the_same_entries(
    tmp_path: Path, feed_server: FeedServer, clock: FakeClock,
) -> None:
    feeds = serve(feed_server, clock)
    results = []
    for parser in ("feedparser", "fast"):
        with app(tmp_path, parser, sqlite_url(tmp_path, parser), feeds, clock,
                 parser=parser) as bot:
            bot.poller.cycle(force=True)
            results.append(stored(bot))
    assert results[0] == results[1]


def test_connections_are_kept_alive_from_one_cycle_to_the_next(
    tmp_path: Path, feed_server: FeedServer, clock: FakeClock,
) -> None:
    feeds = serve(feed_server, clock, n=4)
    with app(tmp_path, "keepalive", sqlite_url(tmp_path, "keepalive"), feeds, clock) as bot:
        bot.poller.cycle(force=True)
        after_first = feed_server.connections
        requests = len(feed_server.requests)
        clock.advance(hours=1)
        outcomes = bot.poller.cycle()
    assert len(feed_server.requests) == requests + len(feeds), "every feed polled again"
    assert feed_server.connections == after_first, "no new connection for the second cycle"
    assert sorted(o.result for o in outcomes).count("not_modified") == len(feeds) - 1


def test_a_warm_cycles_304s_are_saved(
    tmp_path: Path, db_url: str, feed_server: FeedServer, clock: FakeClock,
) -> None:
    feeds = serve(feed_server, clock, n=4)
    with app(tmp_path, "warm", db_url, feeds, clock) as bot:
        bot.poller.cycle(force=True)
        clock.advance(hours=1)
        outcomes = bot.poller.cycle()
        assert [o.result for o in outcomes].count("not_modified") == 4
        states = {f.name: f for f in bot.store.list_feeds()}
        # The 304s were recorded: polled now, next poll in the future, validators kept,
        # and the claim released (the next cycle finds nothing due).
        for name in ("feed-0", "feed-1", "feed-2", "feed-3"):
            assert states[name].last_polled_at == clock()
            assert states[name].next_poll_at > clock()
            assert states[name].etag is not None
        assert bot.poller.cycle() == []


class _IdleConnection(httpcore.ConnectionInterface):
    """A kept-alive connection to ``origin``, idle, as httpcore's pool sees one."""

    def __init__(self, origin: httpcore.URL) -> None:
        self.origin = origin.origin
        self.closed = False
        self.expired = False  # the server closed it, or its keep-alive is over
        self.checks = 0  # has_expired() calls: each is a poll() of the socket

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return origin == self.origin

    def is_available(self) -> bool:
        return not self.closed

    def is_idle(self) -> bool:
        return not self.closed

    def is_closed(self) -> bool:
        return self.closed

    def has_expired(self) -> bool:
        self.checks += 1
        return self.expired

    def close(self) -> None:
        self.closed = True


def test_the_pool_never_closes_a_connection_it_has_assigned_to_a_request() -> None:
    """encode/httpcore#1110: a connection handed to one thread's request stays idle until
    that thread starts the request; another thread's pass must not close it to make room
    (the request would then fail with "Bad file descriptor" or wait out its read timeout)."""
    pool = _ConnectionPool(max_connections=1, max_keepalive_connections=1)
    kept = _IdleConnection(httpcore.URL("http://a.example/"))
    waiting = PoolRequest(httpcore.Request("GET", "http://a.example/feed.xml"))
    waiting.assign_to_connection(kept)  # its thread has not started the request yet
    other = PoolRequest(httpcore.Request("GET", "http://b.example/feed.xml"))
    pool._connections = [kept]
    pool._requests = [waiting, other]
    closing = pool._assign_requests_to_connections()
    assert kept not in closing and not kept.closed
    assert other.connection is None  # queued: the pool is full
    assert pool._connections == [kept]
    pool._requests = [other]  # the first request is over: now the idle one makes room
    assert pool._assign_requests_to_connections() == [kept]
    assert other.connection is not None and other.connection is not kept


def test_the_pool_checks_a_connection_before_reusing_it_and_the_others_once_a_sweep() -> None:
    """Reusing an idle connection the server has closed would fail the request: the one
    about to be reused is always checked. The others' sockets are checked once a sweep
    (``SWEEP_EVERY``), not at every request (that was half a warm cycle's CPU)."""
    pool = _ConnectionPool(max_connections=8, max_keepalive_connections=8)
    idle = [_IdleConnection(httpcore.URL(f"http://h{n}.example/")) for n in range(5)]
    pool._connections = list(idle)
    pool._next_sweep = float("inf")  # no sweep during this test
    for _ in range(10):
        request = PoolRequest(httpcore.Request("GET", "http://h0.example/feed.xml"))
        pool._requests = [request]
        assert pool._assign_requests_to_connections() == []
        assert request.connection is idle[0]
    assert idle[0].checks == 10 and [c.checks for c in idle[1:]] == [0, 0, 0, 0]

    idle[0].expired = True  # closed by the server meanwhile: replaced, not reused
    request = PoolRequest(httpcore.Request("GET", "http://h0.example/feed.xml"))
    pool._requests = [request]
    assert pool._assign_requests_to_connections() == [idle[0]]
    assert request.connection is not None and request.connection not in idle
    assert idle[0] not in pool._connections

    idle[3].expired = True
    pool._next_sweep = 0.0  # a sweep is due: every idle connection is checked, once
    pool._requests = []
    assert pool._assign_requests_to_connections() == [idle[3]]
    assert pool._assign_requests_to_connections() == []
    assert [c.checks for c in (idle[1], idle[2], idle[4])] == [1, 1, 1]


def test_the_pool_hands_one_idle_connection_to_one_request() -> None:
    pool = _ConnectionPool(max_connections=4, max_keepalive_connections=4)
    kept = _IdleConnection(httpcore.URL("http://a.example/"))
    pool._connections = [kept]
    first, second = (PoolRequest(httpcore.Request("GET", f"http://a.example/{n}.xml"))
                     for n in (1, 2))
    pool._requests = [first, second]
    pool._assign_requests_to_connections()
    assert first.connection is kept
    assert second.connection is not None and second.connection is not kept
    assert len(pool._connections) == 2


def stored_matches(bot: App) -> list[tuple[object, ...]]:
    with bot.store.engine.connect() as conn:
        found = conn.execute(select(entries.c.key, matches.c.rule_id, matches.c.rule_version,
                                    matches.c.hits)
                             .join(entries, entries.c.id == matches.c.entry_id)).all()
        sent = conn.execute(select(entries.c.key, alerts.c.channel, alerts.c.kind,
                                   alerts.c.rules, alerts.c.hits)
                            .join(entries, entries.c.id == alerts.c.entry_id)).all()
    return sorted(map(tuple, found)) + sorted(map(tuple, sent))  # type: ignore[arg-type]


def test_the_pool_matches_with_the_rules_it_was_given_and_says_which() -> None:
    rules = load_rules(ROOT / "rules")
    body = rss([Item(title="Japan to provide OSA radars to the Philippines", guid="a",
                     link="https://example.org/a",
                     description="<p>Official Security Assistance: coastal radars.</p>")])
    now = FakeClock()()
    with ParsePool(1) as pool:
        pool.use_rules(rules)
        first = pool.result("u", pool.submit(body, url="http://x/f", headers={},
                                              language=None, now=now, feed=("f", ("t",))))
        assert isinstance(first, Matched)
        assert first.matches == tuple(tuple(rules.match(e, feed_name="f", feed_tags=("t",)))
                                      for e in first.feed.entries)
        assert first.matches[0] and pool.matched_with(first) is rules
        reloaded = load_rules(ROOT / "rules")  # an edit: another rule set, workers restart
        pool.use_rules(reloaded)
        assert pool.matched_with(first) is None  # the poller matches those entries itself
        second = pool.result("u", pool.submit(body, url="http://x/f", headers={},
                                               language=None, now=now, feed=("f", ())))
        assert isinstance(second, Matched) and pool.matched_with(second) is reloaded
        plain = pool.result("u", pool.submit(body, url="http://x/f", headers={},
                                              language=None, now=now))
        assert not isinstance(plain, Matched)  # no feed given: parsed only


@pytest.mark.parametrize("reloaded", [False, True])
def test_matching_in_the_workers_stores_what_matching_inline_stores(
    tmp_path: Path, feed_server: FeedServer, clock: FakeClock, reloaded: bool,
) -> None:
    """Every document matched in the pool: the same matches and alerts as matching in the
    poller's process. ``reloaded``: the workers match with the rules as they were before an
    edit that dropped the rule that fires most, the poller stores with the edited rules;
    the workers' matches are then not used, and nothing names the dropped rule."""
    feeds = serve(feed_server, clock)
    full = load_rules(ROOT / "rules")
    fired = [m.rule_id for item in items(clock, 0)
             for m in full.match(Entry(key="k", title=item.title, summary=item.description),
                                 feed_name="f")]
    dropped = max(set(fired), key=fired.count)
    edited = RuleSet(tuple(r for r in full.rules if r.id != dropped),
                     full.lists) if reloaded else full
    results = []
    for name, n in (("inline", 0), ("pool", 1)):
        with app(tmp_path, name, sqlite_url(tmp_path, name), feeds, clock,
                 parse_workers=n) as bot:
            bot.poller.backfill = False  # alert the back catalogue: alerts to compare
            bot.poller.pool_matching = True
            bot.poller.rules = lambda: edited
            pool = bot.poller.parse_pool
            if pool is not None and reloaded:
                pool.use_rules = lambda _rules, pool=pool: ParsePool.use_rules(pool, full)
            bot.poller.cycle(force=True)
            results.append(stored_matches(bot))
    assert results[0] == results[1]
    if reloaded:
        assert not any(dropped in str(row) for row in results[1])
    else:
        assert any(row[2] == "alert" for row in results[0] if len(row) == 5)
