"""Benchmark: one poll cycle over 200 loopback feeds of 50 entries each, cold and warm.

    python bench/poll.py [--feeds 200] [--entries 50] [--latency 0.05] [--write]

Feeds are spread over 20 loopback servers (20 "hosts"), each answer delayed by ``--latency``
seconds to model a distant publisher. Measured in one run:

- baseline: the cold cycle with one fetch at a time (no overlap);
- cold: the first cycle with the default concurrency (16 in total, 2 per host): every feed
  fetched, parsed, matched against the shipped rules and stored;
- warm: the next cycle, in which every feed answers 304 Not Modified.

Figures are wall-clock seconds and ratios against the baseline of the same run.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from feedserver import FeedServer, Item, rss  # noqa: E402
from rich.console import Console  # noqa: E402

from bot.app import open_app  # noqa: E402
from bot.config import Settings  # noqa: E402

HOSTS = 20
TOPICS = [
    "Japan and the Philippines sign an OSA agreement for coastal radars",
    "GCAP partners agree the next phase of the Global Combat Air Programme",
    "Ministers discuss the spending review and local council budgets",
    "Rail strike talks continue as unions weigh the latest offer",
    "防衛省、次期戦闘機の開発で英伊と協議",
]


def feed_body(feed: int, entries: int) -> bytes:
    newest = datetime.now(UTC) - timedelta(hours=1)
    items = [
        Item(
            title=f"{TOPICS[(feed + i) % len(TOPICS)]} ({feed}-{i})",
            link=f"https://publisher{feed % HOSTS}.example/news/{feed}/{i}",
            guid=f"urn:bench:{feed}:{i}",
            description="<p>" + " ".join([TOPICS[(feed * 7 + i) % len(TOPICS)]] * 6) + "</p>",
            published=newest - timedelta(minutes=30 * i),
        )
        for i in range(entries)
    ]
    return rss(items, title=f"Bench feed {feed}")


def run_cycle(settings: Settings) -> tuple[float, int, int]:
    with open_app(settings, console=Console(file=io.StringIO())) as bot:
        start = time.perf_counter()
        outcomes = bot.poller.cycle(force=True)
        elapsed = time.perf_counter() - start
    new = sum(o.new for o in outcomes)
    not_modified = sum(1 for o in outcomes if o.result == "not_modified")
    failed = [o for o in outcomes if o.result == "failed"]
    if failed:
        raise SystemExit(f"bench: {len(failed)} feeds failed, e.g. {failed[0].error}")
    return elapsed, new, not_modified


def scenario(feeds: int, entries: int, latency: float) -> list[str]:
    """One run of the three cycles; returns the Markdown table rows."""
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="policybot-bench-") as tmp:
        servers = [stack.enter_context(FeedServer()) for _ in range(HOSTS)]
        lines = ["feeds:"]
        for n in range(feeds):
            server = servers[n % HOSTS]
            path = f"/feed{n}.xml"
            server.serve(path, feed_body(n, entries), etag=f'"v{n}"',
                         last_modified="Wed, 25 Nov 2026 08:00:00 GMT", latency=latency)
            lines.append(f"  - {{name: bench-{n}, url: 'http://{server.netloc}{path}'}}")

        def settings(name: str, **extra: object) -> Settings:
            target = Path(tmp) / name
            shutil.copytree(ROOT / "rules", target)
            (target / "feeds.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
            return Settings(
                database_url=f"sqlite:///{Path(tmp) / name}.db", rules_dir=target,
                allow_private_addresses=True, **extra,  # type: ignore[arg-type]
            )

        baseline, _, _ = run_cycle(settings("serial", fetch_concurrency=1, fetch_per_host=1))
        default = settings("default")
        cold, new, _ = run_cycle(default)
        warm, _, not_modified = run_cycle(default)
        assert new == feeds * entries, new
        assert not_modified == feeds, not_modified

    label = (f"{feeds} feeds × {entries} entries, {HOSTS} hosts, "
             f"{latency * 1000:.0f} ms per response")
    return [
        f"| {label} | baseline: cold, one fetch at a time | {baseline:.2f} | 1.000 |",
        f"| | cold: 16 concurrent, 2 per host | {cold:.2f} | {cold / baseline:.3f} |",
        f"| | warm: all 304 Not Modified | {warm:.2f} | {warm / baseline:.3f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--write", action="store_true", help="append the figures to RESULTS.md")
    args = parser.parse_args()

    table = ["| scenario | cycle | wall s | ratio vs baseline |", "| --- | --- | ---: | ---: |"]
    # The figure: 200 feeds of 50 entries (CPU-heavy: parse, match, store).
    table += scenario(args.feeds, args.entries, args.latency)
    # Slow publishers, little to parse: shows that fetches overlap.
    table += scenario(args.feeds, 5, 0.1)
    print("\n".join(table))
    if args.write:
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as out:
            stamp = datetime.now(UTC).strftime("%Y-%m-%d")
            out.write(f"\n### poll.py, {stamp} (`python bench/poll.py --write`)\n\n")
            out.write("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
