"""What the console's tests share: a rules directory in git with a loopback feed in
feeds.yaml, real polls that store entries and matches, and form helpers."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT
from feedserver import FeedServer, Item, rss
from typer.testing import CliRunner

from bot.cli import app as cli

NOW = datetime.now(UTC)

# Stored by the first poll. "GIGO" alone is not GCAP (garbage in, garbage out); the
# Japanese item names the programme by its treaty organisation's Japanese name, which
# the shipped rule does not know — the term the editor test adds.
ITEMS = [
    Item("UK and Japan sign GCAP treaty milestone", guid="gcap-1",
         link="https://example.org/gcap-1", description="The Global Combat Air Programme "
         "moves to its next phase.", published=NOW - timedelta(hours=3)),
    Item("Japan's OSA to fund coastal radars for the Philippines", guid="osa-1",
         link="https://example.org/osa-1", description="Official Security Assistance "
         "(OSA) will provide coastal radars.", published=NOW - timedelta(hours=2)),
    Item("<script>alert('x')</script> GCAP and the Tempest fighter", guid="hostile-1",
         link="javascript:alert(1)", description="<img src=x onerror=alert(1)> combat air",
         published=NOW - timedelta(hours=1)),
    Item("国際機関ジャイゴの事務局が開所", guid="jigo-1", link="https://example.org/jigo-1",
         description="条約に基づく国際機関ジャイゴの事務局がロンドンで開所した。",
         published=NOW - timedelta(minutes=30), language="ja"),
    Item("Reshuffle at the club after a poor run of results", guid="football-1",
         link="https://example.org/football-1", description="The manager rang the changes.",
         published=NOW - timedelta(minutes=10)),
]
NEW_TERM = "ジャイゴ"  # what the editor test adds to the gcap rule's GIGO names

runner = CliRunner()


def rules_dir_for(tmp_path: Path, feed_url: str, *, git: bool = True) -> Path:
    """A copy of the shipped rules whose feeds.yaml polls one loopback feed."""
    directory = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", directory, ignore=shutil.ignore_patterns("README.md"))
    (directory / "feeds.yaml").write_text(
        "# The test's feeds\nfeeds:\n"
        f"  - name: defence-news\n    url: \"{feed_url}\"\n    tags: [uk, defence]\n",
        encoding="utf-8")
    if git:
        git_run(directory, "init", "--quiet", "--initial-branch=main")
        git_run(directory, "add", "-A")
        git_run(directory, "-c", "user.name=Setup", "-c", "user.email=setup@example.org",
                "commit", "--quiet", "-m", "Initial rules")
    return directory


def git_run(directory: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True,
                          text=True, check=True)
    return done.stdout


def set_env(monkeypatch: pytest.MonkeyPatch, rules: Path, db_url: str) -> None:
    monkeypatch.setenv("POLICYBOT_RULES_DIR", str(rules))
    monkeypatch.setenv("POLICYBOT_DATABASE_URL", db_url)
    monkeypatch.setenv("POLICYBOT_ALLOW_PRIVATE_ADDRESSES", "true")  # the loopback feed
    monkeypatch.setenv("POLICYBOT_PARSE_WORKERS", "0")
    monkeypatch.setenv("POLICYBOT_BACKFILL_ALERT_WINDOW_HOURS", "48")
    for name in ("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "POLICYBOT_WEB_USERS",
                 "POLICYBOT_WEB_USER_HEADER", "POLICYBOT_WEB_EDITORS", "POLICYBOT_WEB_SECRET"):
        monkeypatch.delenv(name, raising=False)


def poll() -> str:
    """One `policybot poll`, in process, as the bot would run it."""
    result = runner.invoke(cli, ["poll"])
    assert result.exit_code == 0, result.output
    return result.output


@contextmanager
def served_feed(items: list[Item] | None = None) -> Iterator[FeedServer]:
    with FeedServer() as server:
        server.serve("/news.xml", rss(ITEMS if items is None else items))
        yield server


def csrf(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def form_value(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name} field in the page"
    return found.group(1)
