"""Benchmark: parsing alone, on one core — the floor under a cold poll cycle.

    python bench/parse.py [--feeds 1000] [--runs 3] [--write]

The documents are bench/poll.py's (bench/corpus.py, the same seed: 15–50 entries a feed, a
third Japanese, half of those Shift_JIS), parsed in this process, nothing fetched or stored:

- baseline: reader's own parser (``reader._parser.feedparser.FeedparserParser``: its
  vendored feedparser with the HTML sanitiser and relative-URI resolution on, and its
  conversion to reader's entry objects), what ``update_feeds`` runs for every new document;
- policybot, feedparser: ``bot.parse.parse_feed`` with the reference backend (sanitiser off,
  HTML reduced to text, keys, dates, content hashes);
- policybot, fast: the same with feedparser-rs (``POLICYBOT_PARSER=fast``), when installed.

Each figure is the median over the runs of the CPU seconds for every document, and its
ratio to the baseline's in the same run. A cold cycle cannot beat its parser: bench/poll.py's
targets, read against these figures, say how much room the rest of the cycle has.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from corpus import feed_document, load_line, record  # noqa: E402

from bot.parse import fast_parser_available, parse_feed  # noqa: E402

HEADERS = {"content-type": "application/rss+xml"}


def documents(feeds: int, seed: int = 7) -> list[bytes]:
    """bench/poll.py's documents: serve_corpus draws them from the same generator."""
    rng = random.Random(seed)
    now = datetime.now(UTC) - timedelta(hours=1)
    return [feed_document(n, rng.randint(15, 50), rng, now=now)[0] for n in range(feeds)]


def reader_parser() -> Callable[[bytes], int] | None:
    try:
        from reader._parser.feedparser import FeedparserParser
    except ImportError:
        return None
    parse = FeedparserParser()

    def entries(body: bytes) -> int:
        _, found = parse("http://bench.example/feed.xml", io.BytesIO(body), HEADERS)
        return len(found)

    return entries


def policybot_parser(backend: str) -> Callable[[bytes], int]:
    now = datetime.now(UTC)

    def entries(body: bytes) -> int:
        return len(parse_feed(body, url="http://bench.example/feed.xml", headers=HEADERS,
                              now=now, parser=backend).entries)  # type: ignore[arg-type]

    return entries


def cpu_seconds(parse: Callable[[bytes], int], docs: list[bytes]) -> tuple[float, int]:
    start = time.process_time()
    entries = sum(map(parse, docs))
    return time.process_time() - start, entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args()

    docs = documents(args.feeds)
    ways: list[tuple[str, Callable[[bytes], int]]] = []
    baseline = reader_parser()
    if baseline is None:
        raise SystemExit("bench/parse.py needs reader: pip install -e '.[bench]'")
    ways.append(("baseline: reader's parser (feedparser, sanitiser on)", baseline))
    ways.append(("policybot, feedparser", policybot_parser("feedparser")))
    if fast_parser_available():
        ways.append(("policybot, fast (feedparser-rs)", policybot_parser("fast")))
    for _, parse in ways:  # warm up: imports, tables, the first document's caches
        parse(docs[0])

    before = os.getloadavg()
    seconds: dict[str, list[float]] = {name: [] for name, _ in ways}
    counts: dict[str, int] = {}
    for _ in range(args.runs):  # the ways take turns, run by run
        for name, parse in ways:
            cpu, counts[name] = cpu_seconds(parse, docs)
            seconds[name].append(cpu)
    after = os.getloadavg()

    base = statistics.median(seconds[ways[0][0]])
    rows = [f"| {args.feeds} documents, median of {args.runs} | entries | CPU s | "
            "entries/s | × baseline speed |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, _ in ways:
        cpu = statistics.median(seconds[name])
        rows.append(f"| {name} | {counts[name]} | {cpu:.2f} | {counts[name] / cpu:,.0f} | "
                    f"{base / cpu:.2f} |")
    table = "\n".join(rows)
    print(table)
    loads = load_line(before, after)
    print(loads)
    if args.write:
        record("parse.py", table, loads)


if __name__ == "__main__":
    main()
