"""Peak memory of fetching a gzip bomb: policybot's bounded decompression vs httpx's decoder.

A gzip stream of about 0.3 MB that inflates to 256 MiB of zeros is served over loopback. Each
scenario runs in a fresh Python process whose peak RSS (``VmHWM``) is reset just before the
fetch, so the figure is that fetch's growth and nothing else's:

- baseline: ``httpx.Client.get`` (``Accept-Encoding: gzip``), which inflates the whole body;
- policybot: ``Fetcher.fetch`` with the default 10 MB cap, which stops at the cap.

    python bench/decompress.py [--mib 256] [--write]

Linux only (/proc). ``--write`` appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zlib
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from feedserver import FeedServer  # noqa: E402

CHILD = """
import json, sys
from pathlib import Path

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

url, small, mode = sys.argv[1:4]
if mode == "httpx":
    import httpx
    client = httpx.Client(trust_env=False)
    client.get(small)
    fetch = lambda: len(client.get(url).content)
else:
    from bot.errors import FetchError
    from bot.fetch import Fetcher, FetchLimits
    fetcher = Fetcher(FetchLimits(), allow_private=True)
    fetcher.fetch(small)
    def fetch():
        try:
            return len(fetcher.fetch(url).body or b"")
        except FetchError as exc:
            return exc.message
Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS")
outcome = fetch()
print(json.dumps({"kib": status("VmHWM") - before, "outcome": outcome}))
"""


def bomb(mib: int) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join([*(deflater.compress(zeros) for _ in range(mib)), deflater.flush()])


def measure(url: str, small: str, mode: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", CHILD, url, small, mode], capture_output=True,
                          text=True, check=True, cwd=ROOT, timeout=600)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="inflated size in MiB")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    body = bomb(args.mib)
    with FeedServer() as server:
        server.serve("/bomb.xml", body, headers={"Content-Encoding": "gzip"})
        server.serve("/small.xml", b"<rss/>")
        url, small = server.url("/bomb.xml"), server.url("/small.xml")
        base = measure(url, small, "httpx")
        ours = measure(url, small, "policybot")
    base_kib, our_kib = int(str(base["kib"])), int(str(ours["kib"]))
    rows = [
        "| scenario | fetch | peak RSS growth MiB | ratio vs baseline | outcome |",
        "| --- | --- | ---: | ---: | --- |",
        f"| gzip {len(body) / 2**20:.2f} MiB → {args.mib} MiB | baseline: httpx decoder | "
        f"{base_kib / 1024:.1f} | 1.000 | {base['outcome']} bytes read |",
        f"| | policybot, 10 MB cap | {our_kib / 1024:.1f} | "
        f"{our_kib / max(base_kib, 1):.3f} | {ours['outcome']} |",
    ]
    table = "\n".join(rows)
    print(table)
    if args.write:
        with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as results:
            results.write(f"\n### decompress.py, {date.today()} "
                          f"(`python bench/decompress.py --mib {args.mib} --write`)\n\n"
                          f"{table}\n")


if __name__ == "__main__":
    main()
