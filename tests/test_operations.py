"""Operations: retention pruning, and one runner per SQLite database."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import FakeClock
from sqlalchemy import select
from test_cli import read_until

from bot.errors import ConfigError
from bot.model import Entry, FeedSource
from bot.runlock import single_runner
from bot.store import EntryWrite, PollWrite, Store
from bot.store.retention import prune_entry_text
from bot.store.tables import entries


def test_retention_prunes_old_text_and_keeps_titles_and_links(store: Store,
                                                              clock: FakeClock) -> None:
    store.sync_feeds([FeedSource("uk-mod", "https://example.org/f")], clock())
    (feed,) = store.feeds_to_poll(clock())
    old = Entry(key="old", title="GCAP treaty signed", link="https://example.org/old",
                summary="long text", content="longer text", content_hash="a")
    store.save_poll(PollWrite(feed_id=feed.id, now=clock(), entries=(EntryWrite(old, None, ()),)))
    clock.advance(days=100)
    new = Entry(key="new", title="New", summary="fresh text", content_hash="b")
    store.save_poll(PollWrite(feed_id=feed.id, now=clock(), entries=(EntryWrite(new, None, ()),)))

    assert prune_entry_text(store, now=clock(), keep=timedelta(days=90)) == 1
    assert prune_entry_text(store, now=clock(), keep=timedelta(days=90)) == 0
    with store.engine.connect() as conn:
        rows = {r.key: r for r in conn.execute(select(entries))}
    assert (rows["old"].title, rows["old"].link) == ("GCAP treaty signed",
                                                     "https://example.org/old")
    assert (rows["old"].summary, rows["old"].content) == ("", "")
    assert rows["new"].summary == "fresh text"


def test_a_second_runner_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    with (single_runner(url), pytest.raises(ConfigError, match="another `policybot run`"),
          single_runner(url)):
        pass
    with single_runner(url):  # released when the first one ends
        pass


def test_a_second_run_process_exits_with_a_clear_message(tmp_path: Path) -> None:
    rules = Path(__file__).resolve().parent.parent / "rules"
    env = {"POLICYBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
           "POLICYBOT_RULES_DIR": str(rules), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    feeds = tmp_path / "rules"
    shutil.copytree(rules, feeds)
    (feeds / "feeds.yaml").write_text("feeds: []\n")
    env["POLICYBOT_RULES_DIR"] = str(feeds)
    with subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as first:
        try:
            read_until(first.stderr, lambda line: "policybot running" in line)
            second = subprocess.run([sys.executable, "-m", "bot", "run"], env=env,
                                    capture_output=True, text=True, timeout=60)
        finally:
            first.terminate()
            first.wait(timeout=60)
    assert second.returncode == 2
    assert "another `policybot run` already uses" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
