"""Several `policybot run` replicas share one PostgreSQL with no coordinator (issue 7).

Real processes, a real PostgreSQL, loopback feeds and the fake Slack. A replica is killed with
SIGKILL while it holds feeds mid-fetch; the others take its feeds over once the claims' lease
expires, and every expected alert reaches Slack exactly once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import ROOT
from fakeslack import FakeSlack
from feedserver import FeedServer, Gate, Item, rss
from test_cli import follow_until, read_until

FEEDS = 12


def replica(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_replicas_on_postgres_share_feeds_and_survive_a_sigkill(
    postgres_url: str, tmp_path: Path, fake_slack: FakeSlack, feed_server: FeedServer
) -> None:
    when = datetime.now(UTC) - timedelta(hours=1)
    gate = Gate(open_at=None, timeout=120)
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    lines = ["feeds:"]
    for n in range(FEEDS):
        body = rss([Item(title=f"UK, Japan and Italy sign GCAP workshare deal {n}",
                         guid=f"gcap-{n}", link=f"https://example.org/gcap/{n}",
                         published=when)])
        feed_server.gated(f"/f{n}.xml", body, gate)
        lines.append(f"  - {{name: f{n}, url: 'http://{feed_server.netloc}/f{n}.xml'}}")
    (rules / "feeds.yaml").write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POLICYBOT_", "SLACK_")) and "proxy" not in k.lower()}
    env |= {
        "POLICYBOT_DATABASE_URL": postgres_url, "POLICYBOT_RULES_DIR": str(rules),
        "POLICYBOT_ALLOW_PRIVATE_ADDRESSES": "true", "SLACK_BOT_TOKEN": fake_slack.token,
        "POLICYBOT_SLACK_API_URL": fake_slack.base_url,
        "POLICYBOT_SLACK_CHANNEL": "#japan-defence",
        # Small batches so that replicas share the work; short leases and ticks so that a
        # dead replica's feeds are taken over within seconds.
        "POLICYBOT_FETCH_CONCURRENCY": "2", "POLICYBOT_FETCH_PER_HOST": "2",
        "POLICYBOT_CLAIM_LEASE_SECONDS": "3", "POLICYBOT_FETCH_DEADLINE": "1",
        "POLICYBOT_FETCH_TIMEOUT": "1", "POLICYBOT_POLL_TICK_SECONDS": "1",
        "POLICYBOT_MAX_ALERTS_PER_CYCLE": "0",
    }
    subprocess.run([sys.executable, "-m", "bot", "db", "upgrade"], env=env, check=True,
                   capture_output=True, timeout=120)

    first = replica(env)
    others: list[subprocess.Popen[str]] = []
    try:
        # The first replica claims a batch and holds two fetches at the gate: kill it there.
        assert gate.wait_for_waiting(2, timeout=60), "the first replica never fetched"
        held = {r.path for r in feed_server.requests}
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=60) == -signal.SIGKILL
        gate.open()
        others = [replica(env), replica(env)]
        for process in others:
            read_until(process.stderr, lambda line: "policybot running" in line)
        # Every feed's alert, exactly once, whoever polled it.
        read_until_posts(fake_slack, FEEDS, others)
    finally:
        for process in [first, *others]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in others:
            assert process.wait(timeout=60) == 0
            process.stderr.close()  # type: ignore[union-attr]
        first.stderr.close()  # type: ignore[union-attr]

    keys = Counter(p.metadata["event_payload"]["entry_key"] for p in fake_slack.posts
                   if p.metadata)
    assert keys == Counter({f"gcap-{n}": 1 for n in range(FEEDS)}), "each alert exactly once"
    assert max(feed_server.max_in_flight_by_path.values()) == 1, (
        "no feed was fetched by two replicas at once")
    requests = Counter(r.path for r in feed_server.requests)
    for path in held:
        assert requests[path] >= 2, f"{path}, held by the killed replica, was polled again"


def read_until_posts(fake: FakeSlack, n: int, processes: list[subprocess.Popen[str]]) -> None:
    """Follow every replica's log (whichever writes) until the fake Slack holds ``n`` alerts;
    a safety limit of two minutes without any log line, not a synchronisation by sleeping."""
    follow_until([p.stderr for p in processes], lambda: len(fake.posts) >= n)
