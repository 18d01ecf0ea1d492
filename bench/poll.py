"""Benchmark: `policybot poll` cycles over many loopback feeds, against peers, in one run.

    python bench/poll.py [--feeds 1000] [--latency 0] [--runs 3] [--peers] [--write]

The parent process serves a generated corpus (bench/corpus.py: EN and JA, 15–50 entries per
feed, some Shift_JIS) on 20 loopback "hosts"; each measured tool runs in a child process, so
its time and peak RSS are its own:

- policybot: one cold cycle (fetch, parse, match against the shipped rules, store in SQLite)
  and one warm cycle (every feed answers 304), through the same code as `policybot poll`;
- naive (with --peers): sequential ``feedparser.parse(url)`` per feed, no conditional GET;
- reader (with --peers, needs ``pip install reader``): lemon24/reader's
  ``update_feeds(workers=8)``, cold then warm.

Each figure is the median of ``--runs`` runs; ratios compare tools within the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from corpus import feeds_yaml, serve_corpus  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- children (one tool each)


def child_policybot(urls_file: Path, workdir: Path) -> dict[str, float]:
    from rich.console import Console

    from bot.app import open_app
    from bot.config import Settings

    rules = workdir / "rules"
    shutil.copytree(ROOT / "rules", rules)
    shutil.copy(urls_file, rules / "feeds.yaml")
    settings = Settings(database_url=f"sqlite:///{workdir / 'bench.db'}", rules_dir=rules,
                        allow_private_addresses=True)
    times = {}
    with open_app(settings, console=Console(file=io.StringIO())) as bot:
        for label in ("cold", "warm"):
            start = time.perf_counter()
            outcomes = bot.poller.cycle(force=True)
            times[label] = time.perf_counter() - start
            failed = [o for o in outcomes if o.result == "failed"]
            if failed:
                raise SystemExit(f"policybot: {len(failed)} feeds failed: {failed[0].error}")
        entries = bot.store.entry_count()
    return {**times, "entries": entries, "rss_mb": peak_rss_mb()}


def child_naive(urls_file: Path, workdir: Path) -> dict[str, float]:
    import feedparser

    urls = _urls(urls_file)
    start = time.perf_counter()
    entries = sum(len(feedparser.parse(url).entries) for url in urls)
    return {"cold": time.perf_counter() - start, "entries": entries, "rss_mb": peak_rss_mb()}


def child_reader(urls_file: Path, workdir: Path) -> dict[str, float]:
    from reader import make_reader

    reader = make_reader(str(workdir / "reader.sqlite"))
    for url in _urls(urls_file):
        reader.add_feed(url)
    times = {}
    for label in ("cold", "warm"):
        start = time.perf_counter()
        reader.update_feeds(workers=8)
        times[label] = time.perf_counter() - start
    entries = reader.get_entry_counts().total
    reader.close()
    return {**times, "entries": entries, "rss_mb": peak_rss_mb()}


CHILDREN = {"policybot": child_policybot, "naive": child_naive, "reader": child_reader}


def _urls(feeds_file: Path) -> list[str]:
    import yaml

    return [f["url"] for f in yaml.safe_load(feeds_file.read_text())["feeds"]]


def run_child(tool: str, feeds_file: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{tool}-") as tmp:
        result = subprocess.run(
            [sys.executable, __file__, "--child", tool, str(feeds_file), tmp],
            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"bench: {tool} failed:\n{result.stderr[-2000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


# ----------------------------------------------------------------------------- the parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per response")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", action="store_true", help="also run naive and reader")
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    parser.add_argument("--child", nargs=3, metavar=("TOOL", "FEEDS", "DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tool, feeds_file, workdir = args.child
        print(json.dumps(CHILDREN[tool](Path(feeds_file), Path(workdir))))
        return

    tools = ["policybot"] + (["naive", "reader"] if args.peers else [])
    results: dict[str, list[dict[str, float]]] = {t: [] for t in tools}
    with serve_corpus(args.feeds, latency=args.latency) as served, \
            tempfile.TemporaryDirectory() as tmp:
        feeds_file = Path(tmp) / "feeds.yaml"
        feeds_file.write_text(feeds_yaml(served), encoding="utf-8")
        for _ in range(args.runs):
            for tool in tools:
                results[tool].append(run_child(tool, feeds_file))

    def median(tool: str, key: str) -> float:
        return statistics.median(r[key] for r in results[tool])

    title = (f"{args.feeds} feeds (15–50 entries, EN/JA, some Shift_JIS), "
             f"{args.latency * 1000:.0f} ms per response, median of {args.runs}")
    rows = [f"| {title} | cold s | warm s | entries | peak RSS MB |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for tool in tools:
        warm = f"{median(tool, 'warm'):.2f}" if "warm" in results[tool][0] else "—"
        rows.append(f"| {tool} | {median(tool, 'cold'):.2f} | {warm} | "
                    f"{median(tool, 'entries'):.0f} | {median(tool, 'rss_mb'):.0f} |")
    if args.peers:
        pb_cold, pb_warm = median("policybot", "cold"), median("policybot", "warm")
        rows.append(f"| policybot vs reader | {median('reader', 'cold') / pb_cold:.1f}× faster"
                    f" | {median('reader', 'warm') / pb_warm:.1f}× faster | | |")
        rows.append(f"| policybot vs naive | {median('naive', 'cold') / pb_cold:.1f}× faster"
                    " | | | |")
    table = "\n".join(rows)
    print(table)
    if args.write:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        command = " ".join(["python bench/poll.py", *sys.argv[1:]])
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as out:
            out.write(f"\n### poll.py, {stamp} (`{command}`)\n\n{table}\n")


if __name__ == "__main__":
    main()
