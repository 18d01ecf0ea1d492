"""`policybot run` posts the alerts that nothing later in a cycle can displace while the
cycle runs, and keeps flood control exact (issue 7: time to Slack).

In each test a second feed answers only once the fake Slack has the posts expected before
the cycle ends (or after a generous timeout): what Slack holds at that moment is what was
posted early. Run through ``Service.poll_job``, the job `policybot run` schedules.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock
from fakeslack import FakeSlack
from feedserver import FeedServer, Item, rss
from sqlalchemy import update
from test_pipeline import CHANNEL, rules_dir

from bot.app import open_app
from bot.config import Settings
from bot.scheduler import Service
from bot.store.tables import feeds

WAIT = 20.0  # seconds the second feed waits for the early posts before answering anyway


class Posts:
    """Counts the fake Slack's accepted posts, so that a handler can wait for them."""

    def __init__(self, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
        self._fake = fake
        self._changed = threading.Condition()
        record = fake._record

        def noting(*args: Any, **kwargs: Any) -> Any:
            post = record(*args, **kwargs)
            with self._changed:
                self._changed.notify_all()
            return post

        monkeypatch.setattr(fake, "_record", noting)

    def titles(self) -> list[str]:
        return [str(p.metadata["event_payload"].get("entry_key")) if p.metadata else "?"
                for p in self._fake.top_level()]

    def wait_for(self, n: int) -> list[str]:
        with self._changed:
            self._changed.wait_for(lambda: len(self._fake.top_level()) >= n, timeout=WAIT)
        return self.titles()


def item(key: str, title: str, description: str, clock: FakeClock) -> Item:
    return Item(title=title, guid=key, link=f"https://example.org/{key}",
                description=f"<p>{description}</p>", published=clock() - timedelta(hours=1))


def osa(n: int, clock: FakeClock) -> Item:  # osa-recipients: high
    return item(f"osa-{n}", f"Japan to provide OSA radars to the Philippines, part {n}",
                f"Official Security Assistance for coastal surveillance, tranche {n}.", clock)


def reshuffle(n: int, clock: FakeClock) -> Item:  # reshuffles: medium
    return item(f"reshuffle-{n}", f"Tokyo reshuffles cabinet: new defense minister {n}",
                f"The prime minister appointed a new defense minister in reshuffle {n}.",
                clock)


@pytest.fixture
def serve(feed_server: FeedServer, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[Posts, dict[str, list[str]]]]:
    """The second feed (/late.xml): answers once ``seen["want"]`` posts are in Slack,
    noting which were there (``seen["early"]``)."""
    posts = Posts(fake_slack, monkeypatch)
    seen: dict[str, list[str]] = {"want": ["1"]}

    def late(h: Any) -> None:
        seen["early"] = posts.wait_for(int(seen["want"][0]))
        h.send_bytes(200, rss([]), "application/rss+xml", {})

    feed_server.route("/late.xml", late)
    yield posts, seen


def settings_for(tmp_path: Path, db_url: str, fake_slack: FakeSlack, feed_server: FeedServer,
                 **more: Any) -> Settings:
    base = f"http://{feed_server.netloc}"
    return Settings(
        database_url=db_url,
        rules_dir=rules_dir(tmp_path, [("first", f"{base}/first.xml"),
                                       ("late", f"{base}/late.xml")]),
        slack_bot_token=fake_slack.token,  # type: ignore[arg-type]
        slack_api_url=fake_slack.base_url, slack_channel=CHANNEL,
        allow_private_addresses=True,
        # Parsed inline: a document from the parse pool is stored when the next fetch
        # finishes, and here the next fetch waits for the early posts.
        parse_workers=0, **more)


def test_the_most_severe_alerts_go_out_before_the_cycle_ends(
    tmp_path: Path, db_url: str, fake_slack: FakeSlack, feed_server: FeedServer,
    clock: FakeClock, serve: tuple[Posts, dict[str, list[str]]],
) -> None:
    posts, seen = serve
    feed_server.serve("/first.xml", rss([osa(1, clock), reshuffle(1, clock)]))
    settings = settings_for(tmp_path, db_url, fake_slack, feed_server)
    with open_app(settings, clock=clock, sleep=clock.sleep) as bot:
        Service(bot, threading.Event()).poll_job()
    assert seen["early"] == ["osa-1"]  # high: posted while the late feed was being fetched
    assert sorted(posts.titles()) == ["osa-1", "reshuffle-1"]  # medium: at the cycle's end


def test_early_posts_count_against_the_cap_and_the_most_severe_still_win(
    tmp_path: Path, db_url: str, fake_slack: FakeSlack, feed_server: FeedServer,
    clock: FakeClock, serve: tuple[Posts, dict[str, list[str]]],
) -> None:
    """Cap 3, four high alerts and two medium ones in one cycle: the three oldest high ones
    go out early — not the fourth, the cap is full — and the closing pass posts no more
    alerts, only the summary of the rest (one high, two medium)."""
    posts, seen = serve
    seen["want"] = ["3"]
    feed_server.serve("/first.xml", rss([reshuffle(1, clock), osa(1, clock), osa(2, clock),
                                         reshuffle(2, clock), osa(3, clock), osa(4, clock)]))
    settings = settings_for(tmp_path, db_url, fake_slack, feed_server,
                            max_alerts_per_cycle=3)
    with open_app(settings, clock=clock, sleep=clock.sleep) as bot:
        Service(bot, threading.Event()).poll_job()
    early = seen["early"]
    assert len(early) == 3 and set(early) <= {"osa-1", "osa-2", "osa-3", "osa-4"}
    top = fake_slack.top_level()
    assert len(top) == 4, "three alerts and one summary"
    summary = top[-1]
    assert summary.metadata is not None
    assert summary.metadata["event_payload"]["kind"] == "summary"
    listed = str(summary.text) + str(summary.blocks)
    left = ({"osa-1", "osa-2", "osa-3", "osa-4"} - set(early)).pop()
    assert left.replace("osa-", "part ") in listed
    assert "new defense minister 1" in listed and "new defense minister 2" in listed


def test_a_document_parsed_in_the_pool_is_stored_while_other_feeds_answer_304(
    tmp_path: Path, db_url: str, fake_slack: FakeSlack, feed_server: FeedServer,
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A warm cycle: one feed has a new item, the others answer 304. Its document, parsed
    in a worker, is stored as soon as the poller hears from the next feed — not at the end
    of the cycle, where its alert would wait for every conditional GET. The last 304 is
    answered only once the worker has parsed it; the late feed, only once its alert is in
    Slack."""
    posts = Posts(fake_slack, monkeypatch)
    quiet = [f"quiet-{n}" for n in range(3)]
    base = f"http://{feed_server.netloc}"
    names = ["first", *quiet, "late"]
    for name in names:
        feed_server.serve(f"/{name}.xml", rss([]), etag=f'"{name}-1"')
    settings = Settings(
        database_url=db_url,
        rules_dir=rules_dir(tmp_path, [(n, f"{base}/{n}.xml") for n in names]),
        slack_bot_token=fake_slack.token,  # type: ignore[arg-type]
        slack_api_url=fake_slack.base_url, slack_channel=CHANNEL,
        allow_private_addresses=True, parse_workers=1)
    with open_app(settings, clock=clock, sleep=clock.sleep) as bot:
        service = Service(bot, threading.Event())
        service.poll_job()  # validators stored; every feed empty
        assert bot.poller.parse_pool is not None
        parsed = threading.Event()
        submit = bot.poller.parse_pool.submit

        def noting(*args: Any, **kwargs: Any) -> Any:
            future = submit(*args, **kwargs)
            future.add_done_callback(lambda _: parsed.set())
            return future

        monkeypatch.setattr(bot.poller.parse_pool, "submit", noting)
        clock.advance(hours=2)
        with bot.store.engine.begin() as conn:  # all due at once: claimed in feeds.yaml order
            conn.execute(update(feeds).values(next_poll_at=clock()))
        feed_server.serve("/first.xml", rss([osa(1, clock)]), etag='"first-2"')
        last_quiet = feed_server.url(f"/{quiet[-1]}.xml")
        answer_304 = feed_server._handler_for(f"/{quiet[-1]}.xml")
        assert answer_304 is not None

        def after_the_parse(h: Any) -> None:
            parsed.wait(WAIT)
            answer_304(h)

        feed_server.route(f"/{quiet[-1]}.xml", after_the_parse)
        seen: list[str] = []

        def late(h: Any) -> None:
            seen.extend(posts.wait_for(1))
            h.send_bytes(304, b"", None, {"ETag": '"late-1"'})

        feed_server.route("/late.xml", late)
        service.poll_job()
    assert last_quiet in {feed_server.url(r.path) for r in feed_server.requests}
    assert seen == ["osa-1"]
    assert posts.titles() == ["osa-1"]
