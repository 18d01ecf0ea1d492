"""Rule matching: the compiled multi-pattern engine against one `re` search per term.

    .venv/bin/python bench/match.py [--rules 1000] [--entries 20000] [--baseline-entries 100]
                                    [--write]

Generates rules of realistic shape (term lists with phrases, prefixes, case-sensitive
acronyms and Japanese terms; AND/OR queries, NEAR, exclusions, a tracked list) as YAML files
loaded by the real loader, and entries of 1–3 KB in English and Japanese. Reports, in one
run: the time to load and compile the rules; entries/s for `RuleSet.match` (with hits, i.e.
highlights) at 100 and at N rules; and entries/s for a baseline that evaluates every rule's
query with one precompiled `re` search per term (truth only, no highlights, NEAR reduced to
"both sides occur" — so the baseline is flattered, never handicapped). The baseline is too
slow to run on every entry; it runs on the first `--baseline-entries` of the same corpus.
`--write` appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.model import Entry  # noqa: E402
from bot.rules import RuleSet, load_rules  # noqa: E402
from bot.rules.match import (  # noqa: E402
    AllOf,
    AnyOf,
    Compiled,
    FeedIs,
    InField,
    LangIs,
    Leaf,
    Negate,
    Proximity,
    field_text,
)
from bot.rules.terms import Pattern  # noqa: E402
from bot.rules.text import normalize  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SYLLABLES = [a + b for a in "bdfgklmnprstvz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]
KANJI = "防衛外務省政府首相安全保障支援装備協力条約艦船機空海陸軍部隊演習共同開発輸出技術"
KATAKANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモラリルレロ"
_FILLER = (
    "the of and to in a is that for it as with was on be by this are from at or an have not "
    "which but were their has been also more said its will would about new after year two "
    "government minister policy week report people first could over last other"
)
FILLER_EN = _FILLER.split()
FILLER_JA = ["の", "は", "を", "に", "が", "と", "で", "した", "する", "について", "として",
             "。", "、", "また", "これ", "ため", "年", "月", "日"]


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(n))


def _ja(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "".join(rng.choice(KANJI) for _ in range(rng.randint(2, 4)))
    return "".join(rng.choice(KATAKANA) for _ in range(rng.randint(3, 5)))


class Vocabulary:
    def __init__(self, rng: random.Random, size: int = 4000) -> None:
        words = {_word(rng, rng.randint(2, 4)) for _ in range(size)}
        self.en = sorted(words)
        self.ja = sorted({_ja(rng) for _ in range(size // 2)})
        self.acronyms = sorted({"".join(rng.choice("ABCDEFGHKLMNPRSTX") for _ in range(3))
                                for _ in range(300)})
        # Zipf-like popularity: a few topic words are common, most are rare.
        self.en_weights = [1 / (i + 60) for i in range(len(self.en))]
        self.ja_weights = [1 / (i + 60) for i in range(len(self.ja))]

    def term(self, rng: random.Random) -> str:
        r = rng.random()
        if r < 0.45:
            return rng.choices(self.en, self.en_weights)[0]
        if r < 0.6:
            return f'"{rng.choices(self.en, self.en_weights)[0]} {rng.choice(self.en)}"'
        if r < 0.7:
            return rng.choices(self.en, self.en_weights)[0][:4] + "*"
        if r < 0.78:
            return "{term: " + rng.choice(self.acronyms) + ", case: sensitive}"
        return rng.choices(self.ja, self.ja_weights)[0]


def make_rules(directory: Path, count: int, vocab: Vocabulary, rng: random.Random) -> None:
    (directory / "lists").mkdir(parents=True, exist_ok=True)
    countries = [f"- term: {vocab.en[i]}\n  aliases: [{vocab.ja[i]}]" for i in range(40)]
    (directory / "lists" / "places.yaml").write_text("\n".join(countries) + "\n", "utf-8")
    for i in range(count):
        lists = {name: [vocab.term(rng) for _ in range(rng.randint(3, 8))]
                 for name in ("topic", "signal", "context", "noise")}
        lists = {k: list(dict.fromkeys(v)) for k, v in lists.items()}
        shape = i % 5
        if shape == 0:
            query = "$topic AND ($signal OR @places)"
        elif shape == 1:
            query = "($topic OR $signal) AND $context"
        elif shape == 2:
            query = "$topic NEAR/5 ($signal OR $context)"
        elif shape == 3:
            query = "title:$topic OR ($signal AND $context)"
        else:
            query = "$topic AND NOT $noise"
        terms = "\n".join(f"  {k}: [{', '.join(v)}]" for k, v in lists.items())
        exclude = "" if shape == 4 else "exclude:\n  noise: $noise AND NOT $topic\n"
        track = "track: places\n" if shape == 0 else ""
        # No acronym warning noise: every generated acronym is case-sensitive.
        (directory / f"rule-{i:04d}.yaml").write_text(
            f"id: rule-{i:04d}\ntitle: Rule {i}\nterms:\n{terms}\nquery: {query}\n"
            f"{exclude}{track}",
            "utf-8",
        )


def make_entries(count: int, vocab: Vocabulary, rng: random.Random) -> list[Entry]:
    entries = []
    for i in range(count):
        japanese = i % 3 == 0
        target = rng.randint(1000, 3000)
        parts: list[str] = []
        size = 0
        while size < target:
            r = rng.random()
            if japanese:
                if r < 0.04:
                    piece = rng.choices(vocab.ja, vocab.ja_weights)[0]
                elif r < 0.05:
                    piece = rng.choices(vocab.en, vocab.en_weights)[0]
                elif r < 0.055:
                    piece = rng.choice(vocab.acronyms)
                else:
                    piece = rng.choice(FILLER_JA) + rng.choice(KANJI)
                parts.append(piece)
                size += len(piece.encode("utf-8"))
            else:
                if r < 0.03:
                    piece = rng.choices(vocab.en, vocab.en_weights)[0]
                elif r < 0.035:
                    piece = rng.choice(vocab.acronyms)
                elif r < 0.04:
                    piece = rng.choices(vocab.ja, vocab.ja_weights)[0]
                else:
                    piece = rng.choice(FILLER_EN)
                if rng.random() < 0.05:
                    piece = piece.capitalize() + rng.choice([".", ",", "’s", ";"])
                parts.append(piece)
                size += len(piece) + 1
        text = ("".join(parts) if japanese else " ".join(parts))
        title_end = 60 if japanese else 200
        entries.append(Entry(key=f"e{i}", title=text[:title_end // 3 if japanese else 80],
                             summary=text[: title_end], content=text,
                             language="ja" if japanese else "en"))
    return entries


# --- baseline: every rule, every term, one `re` search each ----------------------------

_WORD = r"[^\W_]"


def _regex(p: Pattern) -> re.Pattern[str]:
    body = re.escape(p.text)
    left = f"(?<!{_WORD})" if p.left_bounded else ""
    right = "" if p.prefix or not p.right_bounded else f"(?!{_WORD})"
    return re.compile(left + body + right)


class Baseline:
    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules.rules
        self.cache: dict[tuple[str, bool, bool, bool], re.Pattern[str]] = {}

    def leaf(self, leaf: Leaf, texts: dict[tuple[str, bool], str], fields: tuple[str, ...]) -> bool:
        for p in leaf.patterns:
            rx = self.cache.get(p.key)
            if rx is None:
                rx = self.cache[p.key] = _regex(p)
            for f in fields:
                if rx.search(texts[(f, not p.case_sensitive)]):
                    return True
        return False

    def truth(self, node: Compiled, texts: dict[tuple[str, bool], str],
              fields: tuple[str, ...]) -> bool:
        if isinstance(node, Leaf):
            return self.leaf(node, texts, fields)
        if isinstance(node, AllOf):
            return all(self.truth(c, texts, fields) for c in node.children)
        if isinstance(node, AnyOf):
            return any(self.truth(c, texts, fields) for c in node.children)
        if isinstance(node, Negate):
            return not self.truth(node.child, texts, fields)
        if isinstance(node, InField):
            return self.truth(node.child, texts, (node.field,))
        if isinstance(node, FeedIs | LangIs):
            return True
        assert isinstance(node, Proximity)
        return self.leaf(node.left, texts, fields) and self.leaf(node.right, texts, fields)

    def match(self, entry: Entry) -> int:
        texts = {}
        for f in ("title", "summary", "content", "category"):
            raw = field_text(entry, f)
            texts[(f, True)] = normalize(raw).text
            texts[(f, False)] = normalize(raw, casefold=False).text
        fired = 0
        for rule in self.rules:
            if self.truth(rule.compiled, texts, rule.fields) and not any(
                    self.truth(n, texts, rule.fields) for _, n in rule.compiled_excludes):
                fired += 1
        return fired


def timed_load(directory: Path) -> tuple[RuleSet, float]:
    start = time.perf_counter()
    rules = load_rules(directory)
    _ = rules.engine
    return rules, time.perf_counter() - start


def rate(rules: RuleSet, entries: list[Entry]) -> tuple[float, float]:
    """(entries per second, mean rules matched per entry)."""
    start = time.perf_counter()
    fired = 0
    for entry in entries:
        fired += len(rules.match(entry, feed_name="bench"))
    elapsed = time.perf_counter() - start
    return len(entries) / elapsed, fired / len(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--baseline-entries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    vocab = Vocabulary(rng)
    entries = make_entries(args.entries, vocab, rng)
    sizes = [len(e.content.encode("utf-8")) for e in entries]
    normalize("ウォームアップ")  # build the normalisation tables outside the timings
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        small_dir, big_dir = Path(tmp, "small"), Path(tmp, "big")
        make_rules(small_dir, min(100, args.rules), vocab, random.Random(args.seed + 1))
        make_rules(big_dir, args.rules, vocab, random.Random(args.seed + 1))
        small, _ = timed_load(small_dir)
        big, compile_s = timed_load(big_dir)
    print(f"{len(entries)} entries, {statistics.mean(sizes) / 1024:.1f} KB mean; "
          f"{len(big.rules)} rules loaded and compiled in {compile_s:.2f} s", flush=True)
    base_entries = entries[: args.baseline_entries]
    start = time.perf_counter()
    baseline = Baseline(big)
    base_fired = sum(baseline.match(e) for e in base_entries)
    base_rate = len(base_entries) / (time.perf_counter() - start)
    print(f"baseline (per-rule re, {len(base_entries)} entries): {base_rate:,.1f} entries/s, "
          f"{base_fired / len(base_entries):.1f} rules fire per entry", flush=True)
    small_rate, small_fired = rate(small, entries)
    print(f"engine, {len(small.rules)} rules: {small_rate:,.0f} entries/s "
          f"({small_fired:.1f} fire per entry)", flush=True)
    big_rate, big_fired = rate(big, entries)
    print(f"engine, {len(big.rules)} rules: {big_rate:,.0f} entries/s "
          f"({big_fired:.1f} fire per entry)", flush=True)
    rows = [
        (f"baseline: per-rule `re`, {len(big.rules)} rules", f"{base_rate:,.1f}", "1"),
        (f"engine, {len(small.rules)} rules", f"{small_rate:,.0f}",
         f"{small_rate / base_rate:,.0f}"),
        (f"engine, {len(big.rules)} rules", f"{big_rate:,.0f}", f"{big_rate / base_rate:,.0f}"),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    report = (
        f"\n### match.py, {date.today().isoformat()} (`python bench/match.py --write`)\n\n"
        f"{len(entries):,} entries (EN and JA, {min(sizes) // 1024}–{max(sizes) // 1024} KB, "
        f"mean {statistics.mean(sizes) / 1024:.1f} KB); {big_fired:.1f} rules fire per entry "
        f"at {len(big.rules)} rules. Loading and compiling {len(big.rules)} rule files: "
        f"{compile_s:.2f} s. From {len(small.rules)} to {len(big.rules)} rules the engine "
        f"keeps {big_rate / small_rate:.0%} of its speed.\n\n"
        "| matcher | entries/s | × baseline |\n| --- | ---: | ---: |\n" + table + "\n"
    )
    print(report)
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(report)


if __name__ == "__main__":
    main()
