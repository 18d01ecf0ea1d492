"""Prove it survives (issue 7): random kills, a flaky Slack, changing feeds, a database that
drops every connection mid-cycle. At the end nothing is lost and nothing is doubled."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import ROOT, FakeClock
from fakeslack import FakeSlack
from feedserver import FeedServer, Item, rss
from sqlalchemy import func, select, text, update
from test_cli import read_until

from bot.app import App, open_app
from bot.config import Settings
from bot.errors import StorageError
from bot.store import make_engine, upgrade
from bot.store.tables import entries, feeds

CYCLES = 20
FEEDS = 4


class ChangingFeeds:
    """Feeds that gain a new GCAP item (which must alert) and a noise item each cycle."""

    def __init__(self, server: FeedServer, rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.items: dict[int, list[Item]] = {n: [] for n in range(FEEDS)}
        self.expected: set[str] = set()
        self.version = 0

    def publish(self, cycle: int) -> None:
        now = datetime.now(UTC)
        for n in self.rng.sample(range(FEEDS), k=self.rng.randint(1, FEEDS)):
            key = f"gcap-{cycle}-{n}"
            self.items[n].insert(0, Item(
                title=f"GCAP partners agree workshare, round {cycle} (feed {n})", guid=key,
                link=f"https://example.org/{key}", published=now - timedelta(minutes=5)))
            self.items[n].insert(0, Item(
                title=f"Council budget talks, round {cycle}", guid=f"noise-{cycle}-{n}",
                link=f"https://example.org/noise-{cycle}-{n}", published=now))
            self.expected.add(key)
        self.version += 1
        for n, items in self.items.items():
            self.server.serve(f"/f{n}.xml", rss(items[:30]), etag=f'"{n}-{self.version}"')


def make_rules(tmp_path: Path, server: FeedServer) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    lines = ["feeds:"] + [f"  - {{name: f{n}, url: 'http://{server.netloc}/f{n}.xml'}}"
                          for n in range(FEEDS)]
    (rules / "feeds.yaml").write_text("\n".join(lines) + "\n")
    return rules


def test_random_kills_and_a_flaky_slack_on_postgres_lose_nothing_and_double_nothing(
    postgres_url: str, tmp_path: Path, fake_slack: FakeSlack, feed_server: FeedServer
) -> None:
    rng = random.Random(20261129)
    changing = ChangingFeeds(feed_server, rng)
    changing.publish(0)
    fake_slack.set_channels({"#japan-defence": "C0JDEFENCE"})
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POLICYBOT_", "SLACK_")) and "proxy" not in k.lower()}
    env |= {
        "POLICYBOT_DATABASE_URL": postgres_url,
        "POLICYBOT_RULES_DIR": str(make_rules(tmp_path, feed_server)),
        "POLICYBOT_ALLOW_PRIVATE_ADDRESSES": "true", "SLACK_BOT_TOKEN": fake_slack.token,
        "POLICYBOT_SLACK_API_URL": fake_slack.base_url,
        "POLICYBOT_SLACK_CHANNEL": "#japan-defence", "POLICYBOT_POLL_TICK_SECONDS": "1",
        "POLICYBOT_MAX_ALERTS_PER_CYCLE": "0",
        # A killed run leaves its claims behind: short leases (and the fetch deadline they
        # must outlast) let the next run take them over within the test's time.
        "POLICYBOT_CLAIM_LEASE_SECONDS": "2", "POLICYBOT_FETCH_DEADLINE": "1",
        "POLICYBOT_FETCH_TIMEOUT": "1",
    }
    engine = make_engine(postgres_url)
    upgrade(engine)
    try:
        for cycle in range(CYCLES):
            if cycle:
                changing.publish(cycle)
            with engine.begin() as conn:  # time passes: every feed is due again
                conn.execute(update(feeds).values(next_poll_at=datetime.now(UTC)))
            for _ in range(rng.randint(0, 2)):
                fake_slack.fail_next("chat.postMessage", **rng.choice(
                    [{"status": 429, "retry_after": 1}, {"status": 500}]))
            with subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) as process:
                try:
                    # Kill at a random point: after k of the log events this run is sure
                    # to write (start-up, one per feed polled); posting runs alongside.
                    for _ in range(rng.randint(1, 2 + FEEDS)):
                        read_until(process.stderr, lambda line: " bot." in line)
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=60)
                finally:
                    if process.poll() is None:
                        process.kill()
        # A last, uninterrupted run delivers whatever is left; alerts waiting out a backoff
        # after the random 500s are made due now, as an operator would.
        with engine.begin() as conn:
            conn.execute(update(feeds).values(next_poll_at=datetime.now(UTC)))
        subprocess.run([sys.executable, "-m", "bot", "alerts", "retry"], env=env, check=True,
                       capture_output=True, timeout=120)
        with subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) as process:
            try:
                while expected_posted(fake_slack) < changing.expected:
                    read_until(process.stderr, lambda line: "delivery" in line)
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=60) == 0
            finally:
                if process.poll() is None:
                    process.kill()
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(entries)).scalar_one()
            keys = conn.execute(select(func.count(func.distinct(entries.c.key)))).scalar_one()
    finally:
        engine.dispose()

    posted = Counter(p.metadata["event_payload"]["entry_key"] for p in fake_slack.posts
                     if p.metadata and p.thread_ts is None)
    assert set(posted) == changing.expected, "no alert lost, none unexpected"
    assert max(posted.values()) == 1, f"doubled: {[k for k, v in posted.items() if v > 1]}"
    assert stored == keys == 2 * len(changing.expected), "every entry stored once"


def expected_posted(fake: FakeSlack) -> set[str]:
    return {p.metadata["event_payload"]["entry_key"] for p in fake.posts if p.metadata}


def test_a_database_that_drops_every_connection_mid_cycle_loses_nothing_on_postgres(
    postgres_url: str, tmp_path: Path, fake_slack: FakeSlack, feed_server: FeedServer,
    clock: FakeClock,
) -> None:
    """As a PostgreSQL restart looks to a client: every connection is cut mid-cycle."""
    when = clock() - timedelta(hours=1)
    for n in range(FEEDS):
        feed_server.serve(f"/f{n}.xml", rss([Item(
            title=f"GCAP treaty ratified by partner {n}", guid=f"gcap-{n}",
            link=f"https://example.org/gcap-{n}", published=when)]), etag=f'"{n}"')
    cut = {"done": False}

    def restart_database(handler: object) -> None:
        # Answers the third feed only after cutting every connection to the test database.
        if not cut["done"]:
            cut["done"] = True
            killer = make_engine(postgres_url)
            try:
                with killer.connect() as conn:
                    conn.execute(text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            finally:
                killer.dispose()
        handler.send_bytes(200, rss([Item(  # type: ignore[attr-defined]
            title="GCAP treaty ratified by partner 2", guid="gcap-2",
            link="https://example.org/gcap-2", published=when)]), "application/rss+xml", {})

    feed_server.route("/f2.xml", restart_database)
    settings = Settings(
        database_url=postgres_url, rules_dir=make_rules(tmp_path, feed_server),
        slack_bot_token=fake_slack.token,  # type: ignore[arg-type]
        slack_api_url=fake_slack.base_url, slack_channel="#japan-defence",
        allow_private_addresses=True, fetch_concurrency=1, fetch_per_host=1,
    )
    bot: App
    with open_app(settings, clock=clock, sleep=clock.sleep) as bot:
        # Either the cycle fails cleanly with a one-line StorageError (a connection died in
        # a transaction), or the pool's pre-ping reconnected and it carried on.
        try:
            bot.poller.cycle(force=True)
        except StorageError as exc:
            assert "\n" not in str(exc)
        assert cut["done"]
        clock.advance(minutes=30)  # leases of a failed cycle expire
        outcomes = bot.poller.cycle(force=True)
        assert all(o.result in ("ok", "not_modified") for o in outcomes)
        bot.deliverer.recover()
        bot.deliverer.deliver_due()
        assert bot.store.entry_count() == FEEDS
    posted = Counter(p.metadata["event_payload"]["entry_key"] for p in fake_slack.posts
                     if p.metadata)
    assert posted == Counter({f"gcap-{n}": 1 for n in range(FEEDS)})
