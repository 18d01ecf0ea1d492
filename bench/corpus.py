"""A realistic generated corpus of feeds for the benchmarks: EN and JA, 15–50 entries each,
summaries of a few hundred to 1,500 characters, some feeds in Shift_JIS, served on loopback
by several FeedServers (several "hosts")."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from feedserver import FeedServer, Item, rss  # noqa: E402

HOSTS = 20

EN_TITLES = [
    "Japan to provide OSA radars to the Philippines",
    "UK, Japan and Italy move GCAP to the next phase",
    "SDF asset protection for Royal Navy ships in joint drills",
    "Cabinet reshuffle: new Defence Secretary appointed",
    "Ministers discuss the spending review and council budgets",
    "Rail strike talks continue as unions weigh the latest offer",
    "Premier League: manager reshuffles the midfield",
    "Wealth managers pitch asset protection trusts to retirees",
]
JA_TITLES = [
    "政府安全保障能力強化支援でフィリピンに沿岸監視レーダー",
    "日英伊の次期戦闘機GCAP、共同開発が次の段階へ",
    "自衛隊、英海軍艦艇の武器等防護を実施",
    "内閣改造で新しい防衛大臣が就任",
    "大阪で国際会議が開幕、観光客が増加",
    "プロ野球、監督がオーダーを組み替え",
]
FILLER_EN = ("The statement set out the programme's next steps, the budget and the timetable, "
             "and officials briefed reporters on the talks with partners in the region. ")
FILLER_JA = "関係者によると、協議は予定通り進んでおり、予算と日程について説明があった。"


@dataclass(frozen=True)
class Served:
    url: str
    name: str
    language: str


def feed_document(n: int, entries: int, rng: random.Random, *, now: datetime) -> tuple[bytes, str]:
    items, language, encoding = feed_items(n, entries, rng, now=now)
    return render_feed(n, items, language, encoding), language


def render_feed(n: int, items: list[Item], language: str, encoding: str) -> bytes:
    return rss(items, title=f"Bench feed {n}", language=language, encoding=encoding)


def feed_items(n: int, entries: int, rng: random.Random, *,
               now: datetime) -> tuple[list[Item], str, str]:
    """Feed ``n``'s items, newest first, its language and its encoding."""
    japanese = n % 3 == 0
    titles = JA_TITLES if japanese else EN_TITLES
    filler = FILLER_JA if japanese else FILLER_EN
    items = []
    for i in range(entries):
        size = rng.randint(2, 10)
        items.append(Item(
            title=f"{titles[(n + i) % len(titles)]} ({n}-{i})",
            link=f"https://publisher{n % HOSTS}.example/news/{n}/{i}",
            guid=f"urn:bench:{n}:{i}",
            description="<p>" + filler * size + "</p>",
            published=now - timedelta(minutes=45 * i + rng.randint(0, 40)),
            categories=("defence",) if i % 4 == 0 else (),
        ))
    encoding = "shift_jis" if japanese and n % 2 == 0 else "utf-8"
    return items, "ja" if japanese else "en", encoding


@contextmanager
def serve_corpus(feeds: int, *, min_entries: int = 15, max_entries: int = 50,
                 latency: float = 0.0, seed: int = 7) -> Iterator[list[Served]]:
    """Serve ``feeds`` generated feeds (with ETag/Last-Modified) over HOSTS loopback servers."""
    rng = random.Random(seed)
    now = datetime.now(UTC) - timedelta(hours=1)
    with ExitStack() as stack:
        servers = [stack.enter_context(FeedServer()) for _ in range(HOSTS)]
        served = []
        for n in range(feeds):
            body, language = feed_document(n, rng.randint(min_entries, max_entries), rng,
                                           now=now)
            server = servers[n % HOSTS]
            path = f"/feed{n}.xml"
            server.serve(path, body, etag=f'"v{n}"', latency=latency,
                         last_modified="Wed, 25 Nov 2026 08:00:00 GMT",
                         content_type="application/rss+xml")
            served.append(Served(f"http://{server.netloc}{path}", f"bench-{n}", language))
        yield served


def feeds_yaml(served: list[Served]) -> str:
    lines = ["feeds:"]
    lines += [f"  - {{name: {s.name}, url: '{s.url}', language: {s.language}}}" for s in served]
    return "\n".join(lines) + "\n"


def load_line(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    """The machine's 1-minute load average around a run: figures compare only within one."""
    return (f"load average {before[0]:.2f} before, {after[0]:.2f} after "
            f"(1 min; {os.cpu_count()} cores)")


def record(script: str, table: str, loads: str) -> None:
    """Append a run's table to bench/RESULTS.md under its date, command and load."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    command = " ".join([f"python bench/{script}", *sys.argv[1:]])
    with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as out:
        out.write(f"\n### {script}, {stamp} (`{command}`; {loads})\n\n{table}\n")
