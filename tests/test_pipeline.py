"""One cycle, end to end in process: loopback feeds → fetch → parse → match → store → Slack.

The clock is injected; the feed server, the database and the Slack API are real.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT, FakeClock
from fakeslack import FakeSlack
from feedserver import FeedServer, Item, atom, rss
from sqlalchemy import select

from bot.app import App, open_app
from bot.config import Settings
from bot.errors import StorageError
from bot.model import AlertRule, Entry, Severity
from bot.store import AlertWrite, EntryWrite, FeedUpdate, PollWrite
from bot.store.repo import Store
from bot.store.tables import entries

CHANNEL = "#japan-defence"


def topic_items(clock: FakeClock, start: int = 0) -> list[Item]:
    """Two items on the beat and one confusable, published an hour ago."""
    when = clock() - timedelta(hours=1)
    return [
        Item(title="Japan to provide OSA radars to the Philippines",
             link=f"https://example.org/osa-{start}", guid=f"osa-{start}",
             description="<p>Official Security Assistance for coastal surveillance.</p>",
             published=when),
        Item(title="UK, Japan and Italy sign the GCAP treaty", guid=f"gcap-{start}",
             link=f"https://example.org/gcap-{start}",
             description="<p>The Global Combat Air Programme moves to its next phase.</p>",
             published=when),
        Item(title="Arsenal reshuffle their midfield", guid=f"football-{start}",
             link=f"https://example.org/football-{start}",
             description="<p>Manager reshuffles the squad.</p>", published=when),
    ]


def rules_dir(tmp_path: Path, feeds: list[tuple[str, str]]) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", target)
    lines = ["feeds:"] + [f"  - {{name: {name}, url: '{url}'}}" for name, url in feeds]
    (target / "feeds.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_slack: FakeSlack,
             feed_server: FeedServer) -> Settings:
    base = f"http://{feed_server.netloc}"
    return Settings(
        database_url=db_url,
        rules_dir=rules_dir(tmp_path, [("uk-mod", f"{base}/mod.atom"),
                                       ("jp-news", f"{base}/news.xml")]),
        slack_bot_token=fake_slack.token,  # type: ignore[arg-type]
        slack_api_url=fake_slack.base_url,
        slack_channel=CHANNEL,
        allow_private_addresses=True,
    )


@pytest.fixture
def bot(settings: Settings, clock: FakeClock) -> Iterator[App]:
    with open_app(settings, clock=clock, sleep=clock.sleep) as app:
        yield app


def serve_both(server: FeedServer, clock: FakeClock, start: int = 0) -> None:
    items = topic_items(clock, start)
    server.serve("/mod.atom", atom(items[:2]), content_type="application/atom+xml",
                 etag=f'"mod-{start}"', last_modified="Wed, 25 Nov 2026 08:00:00 GMT")
    server.serve("/news.xml", rss(items[2:]), etag=f'"news-{start}"')


def test_a_cycle_stores_matches_and_alerts_each_entry_once(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    serve_both(feed_server, clock)
    outcomes = bot.poller.cycle(force=True)
    assert sorted((o.feed, o.result, o.new) for o in outcomes) == [
        ("jp-news", "ok", 1), ("uk-mod", "ok", 2)]
    assert bot.deliverer.deliver_due().sent == 2
    titles = sorted(p.blocks[1]["text"]["text"] for p in fake_slack.posts if p.blocks)
    assert len(titles) == 2
    assert "OSA" in titles[0] or "OSA" in titles[1]
    assert not any("Arsenal" in t for t in titles), "a football reshuffle is not an alert"
    assert {p.channel for p in fake_slack.posts} == {CHANNEL}
    assert bot.store.entry_count() == 3, "every entry is stored, matched or not"


def test_a_second_cycle_is_conditional_and_posts_nothing(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    serve_both(feed_server, clock)
    bot.poller.cycle(force=True)
    bot.deliverer.deliver_due()
    before = len(fake_slack.posts)
    clock.advance(minutes=34)  # the 30m interval plus at most 10% jitter
    outcomes = bot.poller.cycle()
    assert [o.result for o in outcomes] == ["not_modified", "not_modified"]
    second = feed_server.requests[-2:]
    assert {r.headers.get("if-none-match") for r in second} == {'"mod-0"', '"news-0"'}
    assert bot.deliverer.deliver_due().sent == 0
    assert len(fake_slack.posts) == before


def test_nothing_is_polled_before_it_is_due(bot: App, feed_server: FeedServer,
                                            clock: FakeClock) -> None:
    serve_both(feed_server, clock)
    bot.poller.cycle(force=True)
    clock.advance(minutes=10)
    assert bot.poller.cycle() == []


def test_a_new_feeds_back_catalogue_is_stored_but_not_alerted(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    old = [Item(title="GCAP partners agree the treaty text", guid="old-gcap",
                link="https://example.org/old", published=clock() - timedelta(days=3)),
           Item(title="GCAP treaty undated item", guid="undated",
                link="https://example.org/undated")]
    feed_server.serve("/mod.atom", atom(old), content_type="application/atom+xml")
    feed_server.serve("/news.xml", rss([]))
    bot.poller.cycle(force=True)
    assert bot.deliverer.deliver_due().sent == 0
    assert bot.store.entry_count() == 2
    # After the first poll, a new item alerts even if its date is old.
    feed_server.serve("/mod.atom", atom([*old, Item(
        title="GCAP: Japan confirms workshare", guid="new-gcap", link="https://example.org/new",
        published=clock() - timedelta(days=2))]), content_type="application/atom+xml")
    clock.advance(hours=1)
    bot.poller.cycle(force=True)
    assert bot.deliverer.deliver_due().sent == 1
    assert "workshare" in (fake_slack.posts[0].text or "")


def test_a_failing_feed_is_recorded_and_the_others_go_on(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    serve_both(feed_server, clock)
    feed_server.status("/news.xml", 500)
    outcomes = {o.feed: o for o in bot.poller.cycle(force=True)}
    assert outcomes["uk-mod"].result == "ok"
    assert (outcomes["jp-news"].result, outcomes["jp-news"].status) == ("failed", 500)
    feeds = {f.name: f for f in bot.store.list_feeds()}
    failing = feeds["jp-news"]
    assert failing.consecutive_failures == 1
    assert "500" in (failing.last_error or "")
    assert failing.next_poll_at > clock() + timedelta(minutes=2), "backed off"
    assert bot.deliverer.deliver_due().sent == 2


def test_html_instead_of_a_feed_is_a_parse_error_on_that_feed(
    bot: App, feed_server: FeedServer, clock: FakeClock
) -> None:
    serve_both(feed_server, clock)
    feed_server.serve("/news.xml", "<!doctype html><html><body><p>Hello</p></body></html>",
                      content_type="text/html")
    outcomes = {o.feed: o for o in bot.poller.cycle(force=True)}
    assert outcomes["jp-news"].result == "failed"
    assert "HTML" in (outcomes["jp-news"].error or "")
    (state,) = [f for f in bot.store.list_feeds() if f.name == "jp-news"]
    assert state.last_error_kind == "parse"


def test_a_crash_before_commit_saves_no_feed_state_and_the_next_poll_alerts(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serve_both(feed_server, clock)
    real = Store._write_alerts

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected crash after fetching, before commit")

    monkeypatch.setattr(Store, "_write_alerts", crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        bot.poller.cycle(force=True, url="uk-mod")
    (state,) = [f for f in bot.store.list_feeds() if f.name == "uk-mod"]
    assert (state.etag, state.last_modified, state.last_success_at) == (None, None, None)
    assert bot.store.entry_count() == 0

    monkeypatch.setattr(Store, "_write_alerts", real)
    clock.advance(minutes=11)  # the dead poll's lease expires
    outcomes = bot.poller.cycle(force=True, url="uk-mod")
    assert [(o.result, o.new) for o in outcomes] == [("ok", 2)]
    assert "if-none-match" not in feed_server.requests[-1].headers
    assert bot.deliverer.deliver_due().sent == 2
    assert len(fake_slack.posts) == 2


def test_a_changed_entry_is_updated_without_a_second_alert(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    serve_both(feed_server, clock)
    bot.poller.cycle(force=True)
    bot.deliverer.deliver_due()
    items = topic_items(clock)
    edited = Item(title=items[1].title + " (updated)", guid=items[1].guid, link=items[1].link,
                  description=items[1].description, published=items[1].published)
    feed_server.serve("/mod.atom", atom([items[0], edited]),
                      content_type="application/atom+xml", etag='"mod-1"')
    clock.advance(hours=1)
    outcomes = {o.feed: o for o in bot.poller.cycle(force=True)}
    assert (outcomes["uk-mod"].new, outcomes["uk-mod"].changed) == (0, 1)
    report = bot.deliverer.deliver_due()
    assert (report.sent, report.replies) == (0, 1)
    assert len(fake_slack.top_level()) == 2, "the change is a thread reply, not a new alert"
    (gcap,) = [p for p in fake_slack.top_level() if "GCAP" in (p.text or "")]
    (reply,) = fake_slack.thread(gcap.ts)
    assert "“(updated)”" in reply.blocks[1]["text"]["text"]


def test_removing_a_feed_from_the_file_stops_polling_it(
    bot: App, settings: Settings, feed_server: FeedServer, clock: FakeClock
) -> None:
    serve_both(feed_server, clock)
    bot.poller.cycle(force=True)
    feeds_file = settings.rules_dir / "feeds.yaml"
    feeds_file.write_text("\n".join(feeds_file.read_text().splitlines()[:2]) + "\n")
    assert bot.feeds.refresh()
    clock.advance(hours=2)
    assert [o.feed for o in bot.poller.cycle()] == ["uk-mod"]
    (gone,) = [f for f in bot.store.list_feeds() if f.name == "jp-news"]
    assert gone.removed and gone.entry_count == 1, "its history stays"


def test_an_invalid_rule_edit_keeps_the_last_good_rules(
    bot: App, settings: Settings, feed_server: FeedServer, clock: FakeClock
) -> None:
    rule = settings.rules_dir / "gcap.yaml"
    rule.write_text(rule.read_text() + "\nseverty: high\n")
    assert not bot.rules.refresh()
    assert bot.rules.error is not None and "severty" in bot.rules.error
    serve_both(feed_server, clock)
    bot.poller.cycle(force=True)
    assert bot.deliverer.deliver_due().sent == 2, "the GCAP rule still works"


def test_a_429_with_retry_after_keeps_even_a_forced_poll_away(
    bot: App, feed_server: FeedServer, clock: FakeClock
) -> None:
    serve_both(feed_server, clock)
    feed_server.status("/news.xml", 429, headers={"Retry-After": "7200"})
    bot.poller.cycle(force=True)
    (state,) = [f for f in bot.store.list_feeds() if f.name == "jp-news"]
    assert state.retry_after_until == clock() + timedelta(hours=2)
    assert state.next_poll_at >= clock() + timedelta(hours=2)
    clock.advance(hours=1)
    assert [o.feed for o in bot.poller.cycle(force=True)] == ["uk-mod"]
    clock.advance(hours=1, seconds=1)
    assert "jp-news" in [o.feed for o in bot.poller.cycle(force=True)]


def test_a_410_marks_the_feed_gone_and_it_is_never_polled_again(
    bot: App, feed_server: FeedServer, clock: FakeClock
) -> None:
    serve_both(feed_server, clock)
    feed_server.status("/news.xml", 410)
    bot.poller.cycle(force=True)
    (state,) = [f for f in bot.store.list_feeds() if f.name == "jp-news"]
    assert state.gone
    clock.advance(days=3)
    assert "jp-news" not in [o.feed for o in bot.poller.cycle(force=True)]


def _write(feed_id: int, key: str, now: datetime) -> PollWrite:
    return PollWrite(
        feed_id=feed_id, now=now,
        entries=(EntryWrite(Entry(key=key, title=f"GCAP {key}", content_hash=key), None, ()),),
        alerts=(AlertWrite(key, CHANNEL, (AlertRule("gcap", "GCAP", Severity.HIGH, "v1"),),
                           ()),),
        feed=FeedUpdate(polled_at=now, next_poll_at=now, status=200, etag=f'"{key}"'))


def test_several_feeds_in_one_unit_commit_together_and_a_failed_call_rolls_back_all(
    bot: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The poller groups feeds into one transaction on SQLite (bot.pipeline._Group); each
    feed stays all or nothing, and a call that fails inside the unit rolls back all of it,
    even when something catches its error."""
    first, second = (f.id for f in bot.store.list_feeds())
    with bot.store.unit():
        bot.store.save_poll(_write(first, "a", clock()))
        with bot.store.engine.connect() as other:  # nothing is visible before the commit
            assert other.execute(select(entries.c.id)).all() == []
        bot.store.save_poll(_write(second, "b", clock()))
    assert bot.store.entry_count() == 2
    assert bot.store.alert_counts()["pending"] == 2

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected crash in the second feed's transaction")

    with pytest.raises(StorageError, match="rolled back"), bot.store.unit():
        bot.store.save_poll(_write(first, "c", clock()))
        monkeypatch.setattr(Store, "_write_alerts", crash)
        with contextlib.suppress(RuntimeError):
            bot.store.save_poll(_write(second, "d", clock()))
    assert bot.store.entry_count() == 2  # neither c nor d
    assert {f.etag for f in bot.store.list_feeds()} == {'"a"', '"b"'}


def test_a_stop_mid_cycle_starts_no_more_fetches_and_leaves_the_rest_due(
    tmp_path: Path, db_url: str, feed_server: FeedServer, clock: FakeClock,
) -> None:
    """Shutting down (SIGTERM) while a cycle runs: the fetches already running finish, no
    new one starts — not even for feeds already claimed and queued — and every feed not
    stored is released, due for the next run rather than held until its lease expires."""
    import threading

    names = [f"feed-{n}" for n in range(30)]
    for name in names:
        feed_server.serve(f"/{name}.xml", rss([Item(title=f"Council budget {name}",
                                                    guid=name, published=clock())]))
    base = f"http://{feed_server.netloc}"
    settings = Settings(database_url=db_url, allow_private_addresses=True,
                        rules_dir=rules_dir(tmp_path, [(n, f"{base}/{n}.xml") for n in names]),
                        fetch_concurrency=4)  # 2 per host: the rest are queued
    stop = threading.Event()
    with open_app(settings, clock=clock, sleep=clock.sleep) as bot:
        save = bot.store.save_poll

        def save_then_stop(*args: object, **kwargs: object) -> object:
            result = save(*args, **kwargs)  # type: ignore[arg-type]
            stop.set()  # SIGTERM arrives while the first feed is stored
            return result

        bot.store.save_poll = save_then_stop  # type: ignore[method-assign]
        outcomes = bot.poller.cycle(force=True, stop=stop)
        fetched = {r.path for r in feed_server.requests}
        assert [o.result for o in outcomes] == ["ok"]
        assert len(fetched) < 10  # the one stored, and those running when it stopped
        due = bot.store.feeds_to_poll(clock(), owner="next-run")
        assert {f.name for f in due} == set(names) - {outcomes[0].feed}
