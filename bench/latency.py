"""Benchmark: how long a new item takes to reach Slack, with 1,000 feeds configured.

    python bench/latency.py [--feeds 1000] [--trials 20] [--latency 0] [--parser feedparser]
                            [--write]

The parent process serves the generated corpus (bench/corpus.py) on 20 loopback "hosts" and
a fake Slack Web API (tests/fakeslack.py) that notes when it accepts each post. The bot runs
in a child process with a bot token pointed at the fake, the shipped rules and SQLite, and
does what ``policybot run`` does, through its own job functions (bot.scheduler.Service):
its first cycle stores every feed's back catalogue (no alerts), then for each trial the
parent adds one new item that the rules match to one feed chosen at random, the clock moves
on by the feeds' interval so that *every* feed is due (the worst case: the new item waits
behind a whole cycle of 1,000 conditional GETs), and the child runs the poll job, which
wakes delivery when the cycle ends.

Latency is measured for each trial from the moment the feed server received the request
for the changed feed (fetch start) to the moment the fake Slack accepted the alert, both on
the machine's monotonic clock. The table gives the median and the 95th percentile.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from corpus import HOSTS, feed_items, load_line, record, render_feed  # noqa: E402
from fakeslack import DEFAULT_TOKEN, FakeSlack  # noqa: E402
from feedserver import FeedServer, Item  # noqa: E402

CHANNEL = "#bench"
MARKER = "LATENCY-TRIAL"


class TimedSlack(FakeSlack):
    """The fake Slack, noting when (monotonic clock) it accepted each post."""

    def __init__(self, token: str = DEFAULT_TOKEN, **kwargs: Any) -> None:
        super().__init__(token, **kwargs)
        self.accepted: list[tuple[float, str]] = []  # (time, text)

    def _record(self, *args: Any, **kwargs: Any) -> Any:
        post = super()._record(*args, **kwargs)
        self.accepted.append((time.monotonic(), str(post.text or "") + json.dumps(post.blocks)))
        return post


# ---------------------------------------------------------------- the child: the bot


def child(feeds_file: Path, workdir: Path, base_url: str, token: str, parser: str) -> None:
    from rich.console import Console

    from bot.app import open_app
    from bot.config import Settings
    from bot.scheduler import Service

    rules = workdir / "rules"
    shutil.copytree(ROOT / "rules", rules)
    shutil.copy(feeds_file, rules / "feeds.yaml")
    settings = Settings(database_url=f"sqlite:///{workdir / 'bench.db'}", rules_dir=rules,
                        allow_private_addresses=True, slack_bot_token=token,
                        slack_api_url=base_url, slack_channel=CHANNEL, parser=parser,
                        backfill_alert_window_hours=0)
    offset = timedelta()

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    import threading

    with open_app(settings, console=Console(file=io.StringIO()), clock=clock) as bot:
        service = Service(bot, threading.Event())
        service.poll_job()  # the first cycle: back catalogue, stored without alerts
        print("ready", flush=True)
        for line in sys.stdin:
            if not line.startswith("trial"):
                break
            offset += timedelta(hours=1)  # every feed (interval 30m) is due again
            service.poll_job()  # poll, then deliver (as the scheduler's wake-up does)
            print(f"done {line.split()[1]}", flush=True)


# ----------------------------------------------------------------------------- the parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per response")
    parser.add_argument("--parser", default="feedparser", choices=["feedparser", "fast"])
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        feeds_file, workdir, base_url, token, backend = args.child
        child(Path(feeds_file), Path(workdir), base_url, token, backend)
        return

    rng = random.Random(11)
    now = datetime.now(UTC) - timedelta(hours=1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, TimedSlack.running() as slack:
        servers = [FeedServer().__enter__() for _ in range(HOSTS)]
        try:
            feeds: list[tuple[FeedServer, str, list[Item], str, str]] = []
            lines = ["feeds:"]
            for n in range(args.feeds):
                items, language, encoding = feed_items(n, rng.randint(15, 50), rng, now=now)
                server, path = servers[n % HOSTS], f"/feed{n}.xml"
                feeds.append((server, path, items, language, encoding))
                serve(server, path, n, items, language, encoding, args.latency, version=0)
                lines.append(f"  - {{name: bench-{n}, url: '{server.url(path)}', "
                             f"language: {language}}}")
            feeds_file = Path(tmp) / "feeds.yaml"
            feeds_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
            work = Path(tmp) / "bot"
            work.mkdir()
            bot = subprocess.Popen(
                [sys.executable, __file__, "--child", str(feeds_file), str(work),
                 slack.base_url, slack.token, args.parser],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert bot.stdin is not None and bot.stdout is not None
            expect(bot, "ready")
            latencies = []
            for trial in range(args.trials):
                n = rng.randrange(args.feeds)
                server, path, items, language, encoding = feeds[n]
                marker = f"{MARKER}-{trial}"
                items.insert(0, Item(
                    title=f"Japan to provide OSA radars to the Philippines {marker}",
                    link=f"https://publisher{n % HOSTS}.example/news/{n}/new-{trial}",
                    guid=f"urn:bench:{n}:new-{trial}",
                    description="<p>Coastal radars under Official Security Assistance.</p>",
                    published=datetime.now(UTC)))
                serve(server, path, n, items, language, encoding, args.latency,
                      version=trial + 1)
                changed_at = time.monotonic()
                bot.stdin.write(f"trial {trial}\n")
                bot.stdin.flush()
                expect(bot, f"done {trial}")
                fetched = [r.time for r in server.requests
                           if r.path == path and r.time >= changed_at]
                accepted = [t for t, text in slack.accepted if marker in text]
                if not fetched or not accepted:
                    raise SystemExit(f"trial {trial}: no fetch or no alert for feed {n}")
                latencies.append(accepted[0] - fetched[0])
            bot.stdin.write("stop\n")
            bot.stdin.close()
            bot.wait(timeout=60)
        finally:
            for server in servers:
                server.__exit__(None, None, None)
    load_after = os.getloadavg()

    p95 = statistics.quantiles(latencies, n=20, method="inclusive")[-1]
    title = (f"{args.feeds} feeds configured, all due each trial, {args.trials} trials, "
             f"{args.latency * 1000:.0f} ms per response, POLICYBOT_PARSER={args.parser}")
    table = "\n".join([
        f"| {title} | median s | p95 s | max s |",
        "| --- | ---: | ---: | ---: |",
        f"| new item: fetch start → Slack accepted | {statistics.median(latencies):.2f} | "
        f"{p95:.2f} | {max(latencies):.2f} |",
    ])
    loads = load_line(load_before, load_after)
    print(table)
    print(loads)
    if args.write:
        record("latency.py", table, loads)


def serve(server: FeedServer, path: str, n: int, items: list[Item], language: str,
          encoding: str, latency: float, *, version: int) -> None:
    server.serve(path, render_feed(n, items, language, encoding), etag=f'"v{n}-{version}"',
                 latency=latency, content_type="application/rss+xml")


def expect(bot: subprocess.Popen[str], line: str) -> None:
    assert bot.stdout is not None
    got = bot.stdout.readline().strip()
    if got != line:
        bot.kill()
        raise SystemExit(f"bench: the bot said {got!r}, expected {line!r}")


if __name__ == "__main__":
    main()
