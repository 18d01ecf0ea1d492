"""A feed never dies silently: stale and silent feeds show in `status` and `feeds list`, and
the ops channel hears once when a feed goes bad and once when it recovers. Real loopback
feeds, the fake Slack Web API with the real slack_sdk client, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import FakeClock
from fakeslack import FakeSlack
from feedserver import FeedServer, Item, rss
from test_pipeline import rules_dir

from bot.app import App, open_app
from bot.config import Settings
from bot.notify.ops import HealthChange, render_ops

OPS = "#feeds-ops"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_slack: FakeSlack,
             feed_server: FeedServer) -> Settings:
    return Settings(
        database_url=db_url,
        rules_dir=rules_dir(tmp_path, [("mofa", feed_server.url("/mofa.xml")),
                                       ("mod", feed_server.url("/mod.xml"))]),
        slack_bot_token=fake_slack.token,  # type: ignore[arg-type]
        slack_api_url=fake_slack.base_url,
        slack_channel="#japan-defence",
        slack_ops_channel=OPS,
        allow_private_addresses=True,
    )


@pytest.fixture
def bot(settings: Settings, clock: FakeClock) -> Iterator[App]:
    with open_app(settings, clock=clock, sleep=clock.sleep) as app:
        yield app


def daily_items(clock: FakeClock, n: int = 6, newest_age: timedelta = timedelta(hours=2)
                ) -> bytes:
    newest = clock() - newest_age
    return rss([Item(f"Notice {i}", guid=f"n{i}", published=newest - timedelta(days=i))
                for i in range(n)])


def ops_posts(fake: FakeSlack) -> list[str]:
    return [p.text or "" for p in fake.posts if p.channel == OPS]


def poll_and_announce(bot: App) -> None:
    bot.poller.cycle(force=True)
    assert bot.ops is not None
    bot.ops.announce()


def test_a_feed_failing_past_stale_after_is_announced_once_then_once_on_recovery(
    bot: App, clock: FakeClock, feed_server: FeedServer, fake_slack: FakeSlack
) -> None:
    feed_server.serve("/mofa.xml", daily_items(clock))
    feed_server.serve("/mod.xml", daily_items(clock))
    poll_and_announce(bot)
    feed_server.status("/mod.xml", 500)
    for _ in range(8):  # two days and a bit of failures, polled every 7 h
        clock.advance(hours=7)
        poll_and_announce(bot)
    posts = ops_posts(fake_slack)
    assert len(posts) == 1, posts
    assert posts[0].startswith("Feed mod is failing: failing for 2d")
    (state,) = [f for f in bot.store.list_feeds() if f.name == "mod"]
    assert state.announced_state == "stale"

    feed_server.serve("/mod.xml", daily_items(clock))
    clock.advance(hours=7)
    poll_and_announce(bot)
    poll_and_announce(bot)
    posts = ops_posts(fake_slack)
    assert len(posts) == 2
    assert posts[1] == "Feed mod has recovered: was stale"


def test_a_silent_feed_is_announced(
    bot: App, clock: FakeClock, feed_server: FeedServer, fake_slack: FakeSlack
) -> None:
    feed_server.serve("/mofa.xml", daily_items(clock), etag='"same"')
    feed_server.serve("/mod.xml", daily_items(clock))
    poll_and_announce(bot)
    assert ops_posts(fake_slack) == []
    clock.advance(days=6)  # a daily feed, quiet for six days, answering 304 …
    feed_server.serve("/mod.xml", daily_items(clock))  # … while this one goes on
    poll_and_announce(bot)
    posts = ops_posts(fake_slack)
    assert len(posts) == 1, posts
    (post,) = posts
    assert post.startswith("Feed mofa has gone quiet: nothing new for 6d")
    assert "usually publishes every 1d" in post


def test_a_gone_feed_is_announced_with_what_to_do(
    bot: App, clock: FakeClock, feed_server: FeedServer, fake_slack: FakeSlack
) -> None:
    feed_server.serve("/mofa.xml", daily_items(clock))
    feed_server.status("/mod.xml", 410)
    poll_and_announce(bot)
    (post,) = [p for p in fake_slack.posts if p.channel == OPS]
    assert post.blocks is not None
    assert "no longer polled" in post.blocks[0]["text"]["text"]


def test_an_ops_post_that_fails_is_tried_again_next_time(
    bot: App, clock: FakeClock, feed_server: FeedServer, fake_slack: FakeSlack
) -> None:
    feed_server.serve("/mofa.xml", daily_items(clock))
    feed_server.status("/mod.xml", 410)
    fake_slack.fail_next("chat.postMessage", status=500)
    poll_and_announce(bot)
    assert ops_posts(fake_slack) == []
    assert bot.ops is not None
    assert [c.state for c in bot.ops.announce()] == ["gone"]
    assert len(ops_posts(fake_slack)) == 1


def test_the_ops_message_escapes_what_a_feed_controls() -> None:
    change = HealthChange(1, "mod", "https://example.org/feed?a=1&b=<2>", "stale",
                          "failing for 3d", "HTTP 500 <!channel> & <@U123>")
    text = render_ops(change)["blocks"][0]["text"]["text"]
    assert "<!channel>" not in text and "<@U123>" not in text
    assert "&lt;!channel&gt; &amp; &lt;@U123&gt;" in text


# -- the commands ----------------------------------------------------------------------------


def env_for(settings: Settings) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("POLICYBOT_", "SLACK_")) and "proxy" not in k.lower()}
    return clean | {
        "POLICYBOT_DATABASE_URL": settings.database_url,
        "POLICYBOT_RULES_DIR": str(settings.rules_dir),
        "POLICYBOT_ALLOW_PRIVATE_ADDRESSES": "true", "COLUMNS": "200",
    }


def policybot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_status_and_feeds_list_report_a_stale_feed(
    settings: Settings, feed_server: FeedServer
) -> None:
    # Real time here (the commands read the system clock): the failure is dated two days
    # back in the database, as a bot that has been failing for that long would have left it.
    clock = FakeClock(datetime.now(UTC) - timedelta(days=2, hours=1))
    feed_server.serve("/mofa.xml", daily_items(clock, newest_age=timedelta(hours=-1)))
    feed_server.status("/mod.xml", 503)
    with open_app(settings, clock=clock) as app:
        app.poller.cycle(force=True)
    env = env_for(settings)
    status = policybot(env, "status")
    assert status.returncode == 1, status.stdout + status.stderr
    assert "mod [stale]: HTTP 503 Service Unavailable" in status.stdout, status.stdout
    listed = policybot(env, "feeds", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["mod"]["health"] == "stale"
    assert rows["mod"]["health_reason"].startswith("failing for 2d")
    assert rows["mofa"]["effective_interval_seconds"] == 1800
    failing = policybot(env, "feeds", "list", "--failing")
    assert "mod" in failing.stdout and "mofa" not in failing.stdout
    assert "stale" in failing.stdout and "30m" in failing.stdout


def test_feeds_check_shows_headers_entries_and_matching_rules(
    settings: Settings, feed_server: FeedServer
) -> None:
    when = datetime.now(UTC) - timedelta(hours=1)
    feed_server.serve("/check.xml", rss([
        Item("Japan to provide OSA radars to the Philippines", guid="osa", published=when,
             description="<p>Official Security Assistance for coastal radars.</p>"),
        Item("Arsenal reshuffle their midfield", guid="football", published=when),
    ], title="MOFA press"), etag='"v9"', headers={"Cache-Control": "max-age=3600"})
    env = env_for(settings)
    result = policybot(env, "feeds", "check", feed_server.url("/check.xml"))
    assert result.returncode == 0, result.stderr
    assert "feed: MOFA press" in result.stdout
    assert 'etag: "v9"' in result.stdout and "cache-control: max-age=3600" in result.stdout
    assert "osa-recipients" in result.stdout
    assert "1 of 2 entries match a rule" in result.stdout
    as_json = json.loads(policybot(env, "feeds", "check", feed_server.url("/check.xml"),
                                   "--format", "json").stdout)
    assert [e["rules"] for e in as_json["entries"]] == [["osa-recipients"], []]
    assert feed_server.paths() == ["/check.xml", "/check.xml"]


def test_feeds_check_on_a_web_page_names_its_feed(
    settings: Settings, feed_server: FeedServer
) -> None:
    feed_server.serve("/", '<html><head><link rel="alternate" type="application/atom+xml" '
                           'href="/news.atom" title="News"></head><body>Hi</body></html>',
                      content_type="text/html; charset=utf-8")
    result = policybot(env_for(settings), "feeds", "check", feed_server.url("/"))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {feed_server.url('/')}: not a feed: looks like an HTML page; its Atom feed "
        f"is {feed_server.url('/news.atom')}: use that URL")


def test_feeds_check_refuses_a_private_address_unless_allowed(
    settings: Settings, feed_server: FeedServer
) -> None:
    feed_server.serve("/check.xml", rss([]))
    env = env_for(settings) | {"POLICYBOT_ALLOW_PRIVATE_ADDRESSES": "false"}
    result = policybot(env, "feeds", "check", feed_server.url("/check.xml"))
    assert result.returncode == 1
    assert "loopback address" in result.stderr
    assert feed_server.connections == 0


def test_feeds_discover_lists_the_feeds_a_page_advertises(
    settings: Settings, feed_server: FeedServer
) -> None:
    feed_server.serve("/", """<!doctype html><html><head>
      <link rel="alternate" type="application/rss+xml" href="/rss.xml" title="Press releases">
      <link rel="alternate" type="application/atom+xml" href="https://example.org/a.atom">
      <link rel="stylesheet" href="/site.css">
      <link rel="alternate" hreflang="ja" href="/ja/">
    </head><body></body></html>""", content_type="text/html")
    env = env_for(settings)
    result = policybot(env, "feeds", "discover", feed_server.url("/"), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"url": feed_server.url("/rss.xml"), "kind": "RSS", "title": "Press releases"},
        {"url": "https://example.org/a.atom", "kind": "Atom", "title": None},
    ]
    feed_server.serve("/plain", "<html><body>nothing</body></html>", content_type="text/html")
    none = policybot(env, "feeds", "discover", feed_server.url("/plain"))
    assert none.returncode == 1 and "advertises no feed" in none.stderr


def test_feeds_enable_revives_a_gone_feed(settings: Settings, feed_server: FeedServer) -> None:
    feed_server.status("/mod.xml", 410)
    feed_server.serve("/mofa.xml", rss([]))
    with open_app(settings) as app:
        app.poller.cycle(force=True)
        assert [f.gone for f in app.store.list_feeds() if f.name == "mod"] == [True]
    env = env_for(settings)
    result = policybot(env, "feeds", "enable", "mod")
    assert result.returncode == 0, result.stderr
    unknown = policybot(env, "feeds", "enable", "nope")
    assert unknown.returncode == 2 and "no feed named 'nope'" in unknown.stderr
    feed_server.serve("/mod.xml", rss([Item("Back", guid="b")]))
    with open_app(settings) as app:
        outcomes = {o.feed: o.result for o in app.poller.cycle()}
        assert outcomes["mod"] == "ok"
