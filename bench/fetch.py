"""Benchmark: the CPU one conditional GET costs, policybot's fetcher against plain httpx.

    python bench/fetch.py [--feeds 1000] [--rounds 3] [--write]

The parent serves the generated corpus (bench/corpus.py) on 20 loopback "hosts"; a child
process (so that the servers' CPU is not its own) fetches every feed once, then measures
rounds of conditional GETs, every one answered 304, as a warm poll cycle makes them:

- baseline: a plain ``httpx.Client`` (its own connection pool, as many connections as
  policybot keeps) from 16 threads;
- policybot, fetch_many: ``bot.fetch.Fetcher.fetch_many`` (16 threads, 2 per host, the
  address guard, caps and deadline), as the poller calls it;
- policybot, one at a time: ``Fetcher.fetch`` in a loop (what a request costs without
  threads taking turns at the GIL).

Each figure is the median over the rounds of the child's CPU time (all its threads) divided
by the number of requests, and its ratio to the baseline's in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from corpus import feeds_yaml, load_line, record, serve_corpus  # noqa: E402

THREADS = 16


def child(feeds_file: Path, rounds: int) -> dict[str, list[float]]:
    import httpx
    import yaml

    from bot.fetch import Fetcher, FetchLimits, FetchRequest

    urls = [f["url"] for f in yaml.safe_load(feeds_file.read_text())["feeds"]]
    limits = FetchLimits(max_connections=THREADS, max_per_host=2)
    out: dict[str, list[float]] = {"baseline": [], "fetch_many": [], "sequential": []}
    with Fetcher(limits, allow_private=True) as fetcher, \
            httpx.Client(limits=httpx.Limits(max_connections=2 * THREADS,
                                             max_keepalive_connections=2 * THREADS)) as client, \
            ThreadPoolExecutor(THREADS) as threads:
        requests = []
        for url in urls:
            first = fetcher.fetch(url)
            requests.append(FetchRequest(url, url, first.headers.get("etag"),
                                         first.headers.get("last-modified")))

        def plain(request: FetchRequest[str]) -> int:
            headers = {"If-None-Match": request.etag or ""}
            return client.get(request.url, headers=headers).status_code

        def timed(label: str, run: object) -> None:
            start = time.process_time()
            statuses = run()  # type: ignore[operator]
            out[label].append((time.process_time() - start) / len(requests) * 1000)
            if set(statuses) != {304}:
                raise SystemExit(f"bench: {label}: not every answer was 304: {set(statuses)}")

        for _ in range(rounds):
            timed("baseline", lambda: list(threads.map(plain, requests)))
            timed("fetch_many", lambda: [r.status for _, r in fetcher.fetch_many(requests)])
            timed("sequential", lambda: [
                fetcher.fetch(r.url, etag=r.etag, last_modified=r.last_modified).status
                for r in requests])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    parser.add_argument("--child", metavar="FEEDS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.rounds)))
        return

    load_before = os.getloadavg()
    with serve_corpus(args.feeds) as served, tempfile.TemporaryDirectory() as tmp:
        feeds_file = Path(tmp) / "feeds.yaml"
        feeds_file.write_text(feeds_yaml(served), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, __file__, "--child", str(feeds_file), "--rounds", str(args.rounds)],
            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"bench: the child failed:\n{result.stderr[-2000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    load = load_line(load_before, os.getloadavg())
    base = statistics.median(figures["baseline"])
    rows = [f"| {args.feeds} feeds, every GET answered 304, {THREADS} threads, "
            f"median of {args.rounds} | CPU ms per request | ratio vs baseline |",
            "| --- | ---: | ---: |"]
    for label, title in (("baseline", "baseline: plain httpx.Client, 16 threads"),
                         ("fetch_many", "policybot: Fetcher.fetch_many"),
                         ("sequential", "policybot: Fetcher.fetch, one at a time")):
        ms = statistics.median(figures[label])
        rows.append(f"| {title} | {ms:.2f} | {ms / base:.2f} |")
    table = "\n".join(rows)
    print(table)
    print(load)
    if args.write:
        record("fetch.py", table, load)


if __name__ == "__main__":
    main()
