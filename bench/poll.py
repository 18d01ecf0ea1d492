"""Benchmark: `policybot poll` cycles over many loopback feeds, against peers, in one run.

    python bench/poll.py [--feeds 1000] [--latency 0] [--runs 3] [--peers] [--no-fast]
                         [--only TOOL …] [--write]

The parent process serves a generated corpus (bench/corpus.py: EN and JA, 15–50 entries per
feed, summaries of a few hundred to 1,500 characters, some Shift_JIS) on 20 loopback
"hosts", optionally with ``--latency`` seconds added to every response; each measured tool
runs in a child process, so its time and peak RSS are its own:

- policybot: one cold cycle (fetch, parse, match against the shipped rules, store in SQLite)
  and one warm cycle (every feed answers 304), through the same code as `policybot poll`
  with the default settings (POLICYBOT_PARSER=feedparser);
- policybot-fast: the same with POLICYBOT_PARSER=fast (feedparser-rs; skipped when it is
  not installed, or with ``--no-fast``);
- naive (with --peers): sequential ``feedparser.parse(url)`` per feed, no conditional GET,
  nothing stored (its warm cycle would be its cold one again);
- reader (with --peers, needs ``pip install reader``): lemon24/reader's
  ``update_feeds(workers=8)``, cold then warm (``scheduled=False``: every feed, with its
  conditional GET, as the issue's measurement did).

Each figure is the median of ``--runs`` runs (the tools take turns, run by run); the ratios
compare medians measured in the same run, so that a shared machine's load falls on all.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from corpus import feeds_yaml, load_line, record, serve_corpus  # noqa: E402


def peak_rss_mb() -> float:
    """This process's peak RSS plus each live descendant's (policybot's parse workers):
    at least the tree's peak, as if every process peaked at the same moment. Call it while
    the workers still run.

    A descendant's peak is its ``VmHWM`` from /proc, which starts afresh at ``exec``. The
    kernel's ``RUSAGE_CHILDREN`` maximum does not: a spawned worker is forked from this
    process before it executes Python anew, and its ru_maxrss keeps the forked copy's size
    — this process's RSS at that moment, pages it never wrote — which counted a 43 MB
    worker as 100 MB (issue 7)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return own + sum(_hwm_mb(pid) for pid in _descendants(os.getpid()))


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _hwm_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> dict[str, float]:
    """CPU time of this process (the poller, its fetch threads) and of its finished children
    (the parse workers): where a cycle's work went, printed with ``--cpu``."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_self": own.ru_utime + own.ru_stime,
            "cpu_children": children.ru_utime + children.ru_stime}


# ---------------------------------------------------------------- children (one tool each)


def child_policybot(urls_file: Path, workdir: Path, parser: str = "feedparser"
                    ) -> dict[str, float]:
    from rich.console import Console

    from bot.app import open_app
    from bot.config import Settings

    rules = workdir / "rules"
    shutil.copytree(ROOT / "rules", rules)
    shutil.copy(urls_file, rules / "feeds.yaml")
    settings = Settings(database_url=f"sqlite:///{workdir / 'bench.db'}", rules_dir=rules,
                        allow_private_addresses=True, parser=parser)
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
        rss_mb = peak_rss_mb()  # while the parse workers run
    return {**times, "entries": entries, "rss_mb": rss_mb, **cpu_seconds()}


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
        reader.update_feeds(workers=8, scheduled=False)
        times[label] = time.perf_counter() - start
    entries = reader.get_entry_counts().total
    reader.close()
    return {**times, "entries": entries, "rss_mb": peak_rss_mb()}


def child_policybot_fast(urls_file: Path, workdir: Path) -> dict[str, float]:
    return child_policybot(urls_file, workdir, parser="fast")


CHILDREN = {"policybot": child_policybot, "policybot-fast": child_policybot_fast,
            "naive": child_naive, "reader": child_reader}


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
    parser.add_argument("--no-fast", action="store_true", help="skip POLICYBOT_PARSER=fast")
    parser.add_argument("--only", nargs="+", choices=sorted(CHILDREN), help="these tools only")
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    parser.add_argument("--cpu", action="store_true",
                        help="also print policybot's CPU seconds: its process, its workers")
    parser.add_argument("--child", nargs=3, metavar=("TOOL", "FEEDS", "DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tool, feeds_file, workdir = args.child
        print(json.dumps(CHILDREN[tool](Path(feeds_file), Path(workdir))))
        return

    from bot.parse import fast_parser_available

    tools = ["policybot"]
    if not args.no_fast and fast_parser_available():
        tools.append("policybot-fast")
    if args.peers:
        tools += ["naive", "reader"]
    if args.only:
        tools = [t for t in CHILDREN if t in args.only]
    results: dict[str, list[dict[str, float]]] = {t: [] for t in tools}
    load_before = os.getloadavg()
    with serve_corpus(args.feeds, latency=args.latency) as served, \
            tempfile.TemporaryDirectory() as tmp:
        feeds_file = Path(tmp) / "feeds.yaml"
        feeds_file.write_text(feeds_yaml(served), encoding="utf-8")
        for _ in range(args.runs):
            for tool in tools:
                results[tool].append(run_child(tool, feeds_file))
    load_after = os.getloadavg()

    def median(tool: str, key: str) -> float:
        return statistics.median(r[key] for r in results[tool])

    def ratio(peer: str, key: str, tool: str, peer_key: str | None = None) -> str:
        if peer not in results or tool not in results:
            return ""
        return f"{median(peer, peer_key or key) / median(tool, key):.1f}×"

    title = (f"{args.feeds} feeds (15–50 entries, EN/JA, some Shift_JIS), "
             f"{args.latency * 1000:.0f} ms per response, median of {args.runs}")
    rows = [f"| {title} | cold s | warm s | entries | peak RSS MB |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for tool in tools:
        warm = f"{median(tool, 'warm'):.2f}" if "warm" in results[tool][0] else "—"
        rows.append(f"| {tool} | {median(tool, 'cold'):.2f} | {warm} | "
                    f"{median(tool, 'entries'):.0f} | {median(tool, 'rss_mb'):.0f} |")
    for tool in ("policybot", "policybot-fast"):
        if tool not in results:
            continue
        if "reader" in results:
            rows.append(f"| {tool}: times faster than reader | {ratio('reader', 'cold', tool)}"
                        f" | {ratio('reader', 'warm', tool)} | | |")
        if "naive" in results:
            rows.append(f"| {tool}: times faster than naive | {ratio('naive', 'cold', tool)}"
                        f" | {ratio('naive', 'warm', tool, 'cold')} | | |")
    loads = load_line(load_before, load_after)
    table = "\n".join(rows)
    if args.cpu:
        for tool in tools:
            if "cpu_self" in results[tool][0]:
                print(f"{tool}: CPU s, poller process {median(tool, 'cpu_self'):.2f}, "
                      f"parse workers {median(tool, 'cpu_children'):.2f}")
    print(table)
    print(loads)
    if args.write:
        record("poll.py", table, loads)


if __name__ == "__main__":
    main()
