"""Never noisy: duplicates thread under the first alert, changes thread under their alert,
and a flood becomes one summary. Loopback feeds, real database, real slack_sdk, fake Slack."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import FakeClock
from fakeslack import FakeSlack
from feedserver import FeedServer, Item, atom, rss
from test_pipeline import CHANNEL, rules_dir

from bot.app import App, open_app
from bot.config import Settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_slack: FakeSlack,
             feed_server: FeedServer) -> Settings:
    base = f"http://{feed_server.netloc}"
    fake_slack.set_channels({CHANNEL: "C0JDEFENCE"})
    return Settings(
        database_url=db_url,
        rules_dir=rules_dir(tmp_path, [("uk-mod", f"{base}/mod.atom"),
                                       ("defence-news", f"{base}/news.xml"),
                                       ("uk-fcdo", f"{base}/fcdo.atom")]),
        slack_bot_token=fake_slack.token,  # type: ignore[arg-type]
        slack_api_url=fake_slack.base_url,
        slack_channel=CHANNEL,
        allow_private_addresses=True,
        max_alerts_per_cycle=10,
    )


@pytest.fixture
def bot(settings: Settings, clock: FakeClock) -> Iterator[App]:
    with open_app(settings, clock=clock, sleep=clock.sleep) as app:
        yield app


def first_polls(bot: App, server: FeedServer) -> None:
    """Every feed's first poll with nothing in it, so later items are not back catalogue."""
    server.serve("/mod.atom", atom([]), content_type="application/atom+xml")
    server.serve("/fcdo.atom", atom([]), content_type="application/atom+xml")
    server.serve("/news.xml", rss([]))
    bot.poller.cycle(force=True)


def gcap(clock: FakeClock, guid: str, link: str, title: str = "UK, Japan and Italy sign the "
         "GCAP treaty in Tokyo") -> Item:
    return Item(title=title, guid=guid, link=link, published=clock() - timedelta(minutes=30),
                description="<p>The Global Combat Air Programme moves to its next phase.</p>")


def test_the_same_link_from_a_second_feed_is_a_thread_reply_not_an_alert(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    first_polls(bot, feed_server)
    feed_server.serve("/mod.atom", atom([gcap(clock, "mod-1", "https://www.gov.uk/gcap")]),
                      content_type="application/atom+xml")
    # The FCDO feed lists the same GOV.UK page, with tracking parameters and a fragment.
    feed_server.serve("/fcdo.atom", atom([gcap(
        clock, "fcdo-1", "https://gov.uk/gcap/?utm_source=rss&utm_medium=feed&fbclid=x#top")]),
        content_type="application/atom+xml")
    clock.advance(minutes=1)
    bot.poller.cycle(force=True)
    report = bot.deliverer.deliver_due()

    assert (report.sent, report.replies, report.updates) == (1, 1, 0)
    (alert,) = fake_slack.top_level()
    (reply,) = fake_slack.thread(alert.ts)
    assert reply.channel == "C0JDEFENCE", "threaded by the conversation ID Slack gave"
    # Both feeds are polled in one cycle: whichever is stored first alerts.
    first = "uk-mod" if alert.blocks[2]["elements"][0]["text"].startswith("uk-mod") else "uk-fcdo"
    second = {"uk-mod": "uk-fcdo", "uk-fcdo": "uk-mod"}[first]
    assert f"*Also listed* by {second}" in reply.blocks[0]["text"]["text"]
    assert "same link" in reply.blocks[-1]["elements"][0]["text"]
    assert fake_slack.updates == [], "the same page twice confirms nothing"


def test_a_second_independent_source_threads_and_updates_the_first_alert(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    first_polls(bot, feed_server)
    feed_server.serve("/mod.atom", atom([gcap(clock, "mod-1", "https://www.gov.uk/gcap")]),
                      content_type="application/atom+xml")
    clock.advance(minutes=1)
    bot.poller.cycle(force=True)
    bot.deliverer.deliver_due()
    (alert,) = fake_slack.top_level()

    # Hours later another outlet runs the story under a near-identical headline.
    clock.advance(hours=5)
    feed_server.serve("/news.xml", rss([gcap(
        clock, "dn-77", "https://www.defensenews.com/gcap-treaty",
        title="UK, Japan and Italy sign GCAP treaty in Tokyo")]))
    bot.poller.cycle(force=True)
    report = bot.deliverer.deliver_due()

    assert (report.sent, report.replies, report.updates) == (0, 1, 1)
    assert len(fake_slack.top_level()) == 1, "no second alert for the same story"
    (reply,) = fake_slack.thread(alert.ts)
    assert "*Also reported* by defence-news" in reply.blocks[0]["text"]["text"]
    assert "near-identical title" in reply.blocks[-1]["elements"][0]["text"]
    (edit,) = fake_slack.updates
    assert edit["ts"] == alert.ts
    (updated,) = fake_slack.top_level()
    confirmed = updated.blocks[-1]["elements"][0]["text"]
    assert "Confirmed by 2 independent sources: uk-mod, defence-news" in confirmed
    assert updated.metadata["event_payload"]["alert_id"] == 1, "still findable after a crash"


def test_a_story_older_than_72_hours_alerts_again(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    first_polls(bot, feed_server)
    feed_server.serve("/mod.atom", atom([gcap(clock, "mod-1", "https://www.gov.uk/gcap")]),
                      content_type="application/atom+xml")
    clock.advance(minutes=1)
    bot.poller.cycle(force=True)
    clock.advance(hours=73)
    feed_server.serve("/news.xml", rss([gcap(clock, "dn-1", "https://www.gov.uk/gcap")]))
    bot.poller.cycle(force=True)
    assert bot.deliverer.deliver_due(wait=5).sent == 2
    assert len(fake_slack.top_level()) == 2


def test_an_alerted_entry_that_changes_gets_a_reply_saying_what_changed(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    first_polls(bot, feed_server)
    item = gcap(clock, "mod-1", "https://www.gov.uk/gcap")
    feed_server.serve("/mod.atom", atom([item]), content_type="application/atom+xml")
    clock.advance(minutes=1)
    bot.poller.cycle(force=True)
    bot.deliverer.deliver_due()
    edited = Item(title="UK, Japan and Italy ratify the GCAP treaty in Tokyo", guid=item.guid,
                  link=item.link, published=item.published,
                  description="<p>The Global Combat Air Programme moves to its build phase.</p>")
    feed_server.serve("/mod.atom", atom([edited]), content_type="application/atom+xml")
    clock.advance(hours=1)
    bot.poller.cycle(force=True)
    report = bot.deliverer.deliver_due()

    assert (report.sent, report.replies) == (0, 1)
    (alert,) = fake_slack.top_level()
    (reply,) = fake_slack.thread(alert.ts)
    change = reply.blocks[1]["text"]["text"]
    assert "Title: removed “sign”; added “ratify”" in change
    assert "Summary: removed “next”; added “build”" in change
    # The same content again is no change; a poll that finds it posts nothing.
    clock.advance(hours=1)
    bot.poller.cycle(force=True)
    assert bot.deliverer.deliver_due().replies == 0


def flood(clock: FakeClock, n: int) -> list[Item]:
    places = ["Tokyo", "Rome", "London", "Nagoya", "Turin", "Warton", "Yokohama", "Milan",
              "Bristol", "Sapporo", "Naples", "Leeds", "Kobe", "Genoa", "Derby"]
    return [gcap(clock, f"flood-{i}", f"https://example.org/gcap/{i}",
                 title=f"GCAP partners open a new industry office in {places[i]}")
            for i in range(n)]


def test_eleven_alerts_in_one_cycle_are_ten_posts_and_one_summary(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    first_polls(bot, feed_server)
    feed_server.serve("/mod.atom", atom(flood(clock, 11)), content_type="application/atom+xml")
    clock.advance(minutes=1)
    bot.poller.cycle(force=True)
    report = bot.deliverer.deliver_due()

    assert (report.sent, report.summarised, report.summaries) == (11, 1, 1)
    posts = fake_slack.top_level()
    assert len(posts) == 11
    summary = posts[-1]
    assert summary.metadata["event_payload"]["kind"] == "summary"
    assert summary.blocks[0]["text"]["text"].endswith("1 more alert (flood control)")
    assert "Kobe" not in summary.raw and "Sapporo" not in summary.raw
    assert "GCAP partners open a new industry office in Naples" in summary.blocks[1]["text"]["text"]
    counts = bot.store.alert_counts()
    assert (counts["sent"], counts["pending"]) == (12, 0), "11 alerts and the summary"


def test_the_cap_is_a_setting(
    settings: Settings, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    with open_app(settings.model_copy(update={"max_alerts_per_cycle": 3}), clock=clock,
                  sleep=clock.sleep) as bot:
        first_polls(bot, feed_server)
        feed_server.serve("/mod.atom", atom(flood(clock, 8)),
                          content_type="application/atom+xml")
        clock.advance(minutes=1)
        bot.poller.cycle(force=True)
        report = bot.deliverer.deliver_due()
    assert (report.sent, report.summarised) == (8, 5)
    assert len(fake_slack.top_level()) == 4
    assert "5 more alerts" in fake_slack.top_level()[-1].blocks[0]["text"]["text"]


def test_a_reply_to_an_alert_in_a_summary_threads_under_the_summary(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    first_polls(bot, feed_server)
    items = flood(clock, 11)
    feed_server.serve("/mod.atom", atom(items), content_type="application/atom+xml")
    clock.advance(minutes=1)
    bot.poller.cycle(force=True)
    bot.deliverer.deliver_due()
    summary = fake_slack.top_level()[-1]
    folded = items[-1]  # listed in the summary (all have one severity: the newest is folded)
    feed_server.serve("/news.xml", rss([Item(
        title=folded.title, guid="dn-1", link="https://www.defensenews.com/x",
        published=folded.published, description=folded.description)]))
    clock.advance(hours=1)
    bot.poller.cycle(force=True)
    report = bot.deliverer.deliver_due()
    assert (report.sent, report.replies, report.updates) == (0, 1, 1)
    assert len(fake_slack.thread(summary.ts)) == 1
    assert fake_slack.updates == [], "a summary is never rewritten into one alert"


def test_in_run_a_cycles_alerts_go_out_in_one_pass_so_the_cap_is_per_cycle(
    bot: App, feed_server: FeedServer, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    """The periodic delivery job stands aside while a poll cycle runs; the cycle delivers
    its alerts at its end, so eleven matches from one cycle are ten alerts and a summary,
    even when the delivery job fires between the cycle's batches."""
    import threading

    from bot.scheduler import Service

    first_polls(bot, feed_server)
    items = flood(clock, 11)
    feed_server.serve("/mod.atom", atom(items[:4]), content_type="application/atom+xml")
    feed_server.serve("/fcdo.atom", atom(items[4:8]), content_type="application/atom+xml")
    feed_server.serve("/news.xml", rss(items[8:]))
    clock.advance(hours=1)
    service = Service(bot, threading.Event())
    save = bot.store.save_poll
    saves = 0

    def save_then_tick(*args: object, **kwargs: object) -> object:
        nonlocal saves
        saves += 1
        result = save(*args, **kwargs)  # type: ignore[arg-type]
        service.deliver_job()  # the 5-second job fires mid-cycle, after each feed
        return result

    bot.store.save_poll = save_then_tick  # type: ignore[method-assign]
    bot.poller.claim_batch = 1  # three batches in one cycle
    service.poll_job()
    assert saves == 3
    posts = fake_slack.top_level()
    assert len(posts) == 11, "ten alerts and one summary"
    assert posts[-1].metadata["event_payload"]["kind"] == "summary"
