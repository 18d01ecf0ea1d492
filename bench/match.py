r"""Rule matching: the compiled multi-pattern engine against one `re` search per term.

    .venv/bin/python bench/match.py [--rules 1000] [--entries 20000] [--baseline-entries 100]
                                    [--corpus realistic|shared] [--write]

Generates rules of realistic shape (term lists with phrases, prefixes, case-sensitive
acronyms and Japanese terms; AND/OR queries, NEAR, exclusions, tracked shared lists) as YAML
files loaded by the real loader, and entries of 1–3 KB in English and Japanese. Reports, in
one run: the time to load and compile the rules (the larger set first, with cold caches);
entries/s for `RuleSet.match` (with hits, i.e. highlights) at 100 and at N rules, timed in
turns on chunks of 500 entries so that a drift in the machine's speed skews neither; and
entries/s for a baseline that evaluates every rule's query with one precompiled `re` search
per term (truth only, no highlights, NEAR reduced to "both sides occur" — so the baseline is
flattered, never handicapped). The baseline is too slow to run on every entry; it runs on
the first `--baseline-entries` of the same corpus. In the same run, the engine without its
compiled parts (`POLICYBOT_NATIVE=0`: the term search, normalising, deciding and matching in
Python, as on a machine without a C compiler), on a quarter of the corpus.

Two corpora. `shared`: the corpus of the first version of this benchmark (2026-11-29), kept
to compare with its figures. Its rules draw every term from one Zipf-like vocabulary of
about 8,000 words, but popularity followed the alphabet — every popular word began with
"ba", so a prefix term such as `bada*` covered dozens of the commonest words — and one
shared list, the 40 commonest words, was named and tracked by a fifth of all rules: each
entry touched the terms of 280 of the 1,000 rules. `realistic` (the default) shuffles the
popularity, gives the rules sixteen shared lists of different popularity drawn from the
vocabulary, and writes entries with more rule terms among the filler, so that about 22
rules fire per entry at 1,000 rules, as in issue 3's corpus. The report shows how much the
rules share their terms, seen from the entries.

The per-term `re` baseline writes each term as the boundary checks the rules mean,
``(?<![^\W_])term(?![^\W_])``, as one would write ``\bterm\b``; CPython's `re` then tries
every position of the text. The report also shows a tuned variant that puts the literal
first (``term(?<![^\W_]term)…``, same matches) so that `re` can skip to it: about 8× faster,
and a fairer idea of what per-rule matching could do. `--write` appends the report to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.model import Entry  # noqa: E402
from bot.rules import RuleSet, load_rules, native  # noqa: E402
from bot.rules.engine import Engine, rule_patterns  # noqa: E402
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


def _shape(i: int, shared: str) -> tuple[str, str, str]:
    """Rule ``i``'s query, exclusion and ``track`` lines: five shapes in turn, one of them
    naming (and tracking) the shared list ``shared``."""
    queries = (f"$topic AND ($signal OR @{shared})", "($topic OR $signal) AND $context",
               "$topic NEAR/5 ($signal OR $context)", "title:$topic OR ($signal AND $context)",
               "$topic AND NOT $noise")
    shape = i % 5
    exclude = "" if shape == 4 else "exclude:\n  noise: $noise AND NOT $topic\n"
    track = f"track: {shared}\n" if shape == 0 else ""
    return queries[shape], exclude, track


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
        query, exclude, track = _shape(i, "places")
        terms = "\n".join(f"  {k}: [{', '.join(v)}]" for k, v in lists.items())
        # No acronym warning noise: every generated acronym is case-sensitive.
        (directory / f"rule-{i:04d}.yaml").write_text(
            f"id: rule-{i:04d}\ntitle: Rule {i}\nterms:\n{terms}\nquery: {query}\n"
            f"{exclude}{track}",
            "utf-8",
        )


def make_entries(count: int, vocab: Vocabulary, rng: random.Random,
                 rates: dict[bool, float] | None = None) -> list[Entry]:
    """Entries of 1–3 KB, a third in Japanese; ``rates``: the share of words that are
    vocabulary words, for English (False) and Japanese (True) entries."""
    en_rate, ja_rate = (0.03, 0.04) if rates is None else (rates[False], rates[True])
    entries = []
    for i in range(count):
        japanese = i % 3 == 0
        target = rng.randint(1000, 3000)
        parts: list[str] = []
        size = 0
        while size < target:
            r = rng.random()
            if japanese:
                if r < ja_rate:
                    piece = rng.choices(vocab.ja, vocab.ja_weights)[0]
                elif r < ja_rate + 0.01:
                    piece = rng.choices(vocab.en, vocab.en_weights)[0]
                elif r < ja_rate + 0.015:
                    piece = rng.choice(vocab.acronyms)
                else:
                    piece = rng.choice(FILLER_JA) + rng.choice(KANJI)
                parts.append(piece)
                size += len(piece.encode("utf-8"))
            else:
                if r < en_rate:
                    piece = rng.choices(vocab.en, vocab.en_weights)[0]
                elif r < en_rate + 0.005:
                    piece = rng.choice(vocab.acronyms)
                elif r < en_rate + 0.01:
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


# --- the realistic corpus ---------------------------------------------------------------

SHARED_LISTS = 16
# Share of the words of an entry that are rule terms (the rest is filler), EN and JA: with
# these, about 22 rules fire per entry at 1,000 rules, as in issue 3's corpus.
REALISTIC_RATES = {False: 0.065, True: 0.10}


class RealisticVocabulary(Vocabulary):
    """The same words as :class:`Vocabulary`, with the popularity shuffled: in the first
    version it followed the alphabet, so every popular word began with "ba", and a rule's
    prefix term ``bada*`` covered dozens of the commonest words."""

    def __init__(self, rng: random.Random, size: int = 4000) -> None:
        super().__init__(rng, size)
        rng.shuffle(self.en)
        rng.shuffle(self.ja)


def make_realistic_rules(directory: Path, count: int, vocab: Vocabulary,
                         rng: random.Random) -> None:
    """Rules of the five shapes of :func:`make_rules`, but sixteen shared lists of 10–30
    entries (drawn from the vocabulary), of Zipf-like popularity, instead of one list of the
    40 commonest words named by a fifth of all rules."""
    lists_dir = directory / "lists"
    lists_dir.mkdir(parents=True, exist_ok=True)
    for n in range(SHARED_LISTS):
        members = dict.fromkeys(rng.choices(vocab.en, vocab.en_weights)[0]
                                for _ in range(rng.randint(10, 30)))
        entries = [f"- term: {m}\n  aliases: [{rng.choice(vocab.ja)}]" for m in members]
        (lists_dir / f"shared-{n:02d}.yaml").write_text("\n".join(entries) + "\n", "utf-8")
    list_weights = [1 / (n + 1) for n in range(SHARED_LISTS)]
    for i in range(count):
        lists = {name: [vocab.term(rng) for _ in range(rng.randint(3, 8))]
                 for name in ("topic", "signal", "context", "noise")}
        lists = {k: list(dict.fromkeys(v)) for k, v in lists.items()}
        shared = f"shared-{rng.choices(range(SHARED_LISTS), list_weights)[0]:02d}"
        query, exclude, track = _shape(i, shared)
        terms = "\n".join(f"  {k}: [{', '.join(v)}]" for k, v in lists.items())
        (directory / f"rule-{i:04d}.yaml").write_text(
            f"id: rule-{i:04d}\ntitle: Rule {i}\nterms:\n{terms}\nquery: '{query}'\n"
            f"{exclude}{track}",
            "utf-8",
        )


def make_realistic_entries(count: int, vocab: Vocabulary, rng: random.Random) -> list[Entry]:
    """:func:`make_entries` with more of the words being rule terms (see REALISTIC_RATES)."""
    return make_entries(count, vocab, rng, rates=REALISTIC_RATES)


# --- baseline: every rule, every term, one `re` search each ----------------------------

_WORD = r"[^\W_]"


def _regex(p: Pattern) -> re.Pattern[str]:
    """The term with its boundaries, written as one would write ``\bterm\b``."""
    body = re.escape(p.text)
    left = f"(?<!{_WORD})" if p.left_bounded else ""
    right = "" if p.prefix or not p.right_bounded else f"(?!{_WORD})"
    return re.compile(left + body + right)


def _tuned_regex(p: Pattern) -> re.Pattern[str]:
    """The same matches with the literal first, so that `re` can skip to it."""
    body = re.escape(p.text)
    left = f"(?<!{_WORD}{body})" if p.left_bounded else ""
    right = "" if p.prefix or not p.right_bounded else f"(?!{_WORD})"
    return re.compile(body + left + right)


class Baseline:
    def __init__(self, rules: RuleSet,
                 regex: Callable[[Pattern], re.Pattern[str]] = _regex) -> None:
        self.rules = rules.rules
        self.regex = regex
        self.cache: dict[tuple[str, bool, bool, bool], re.Pattern[str]] = {}

    def leaf(self, leaf: Leaf, texts: dict[tuple[str, bool], str], fields: tuple[str, ...]) -> bool:
        for p in leaf.patterns:
            rx = self.cache.get(p.key)
            if rx is None:
                rx = self.cache[p.key] = self.regex(p)
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


def rates(rule_sets: list[RuleSet], entries: list[Entry],
          chunk: int = 500) -> list[tuple[float, float, float]]:
    """(entries per second, the same in CPU time, mean rules matched per entry) for each rule
    set, timed in turns on chunks of the corpus (the order of the turns alternating), so
    that each meets the machine in the same state: a drift in its speed during the run (a
    busy neighbour, a slower period) would otherwise land on one of them and skew their
    ratio."""
    wall = [0.0] * len(rule_sets)
    cpu = [0.0] * len(rule_sets)
    fired = [0] * len(rule_sets)
    for n, at in enumerate(range(0, len(entries), chunk)):
        part = entries[at:at + chunk]
        turns = list(enumerate(rule_sets))
        for i, rules in turns if n % 2 == 0 else reversed(turns):
            start = time.perf_counter()
            started = time.process_time()
            for entry in part:
                fired[i] += len(rules.match(entry, feed_name="bench"))
            cpu[i] += time.process_time() - started
            wall[i] += time.perf_counter() - start
    n = len(entries)
    return [(n / w, n / c, f / n) for w, c, f in zip(wall, cpu, fired, strict=True)]


STAGES = ("normalise and scan", "decide", "hits and matches")
COMPILED_STAGES = ("normalise and scan", "decide, hits and matches")


def stage_costs(rule_sets: list[RuleSet], entries: list[Entry],
                chunk: int = 500) -> list[dict[str, float]]:
    """Microseconds per entry in each stage of ``Engine.match``, for each rule set, timed
    entry by entry (the engine's own steps, called as ``match`` calls them) and in turns on
    chunks of the corpus as :func:`rates` does: where the cost goes, and which part of it
    grows with the number of rules. With the compiled matcher (bot/rules/_speedups.c)
    deciding and matching are one call."""
    clock = time.perf_counter
    spent = [dict.fromkeys(STAGES if r.engine._matcher is None else COMPILED_STAGES, 0.0)
             for r in rule_sets]
    for n, at in enumerate(range(0, len(entries), chunk)):
        turns = list(enumerate(rule_sets))
        for i, rules in turns if n % 2 == 0 else reversed(turns):
            engine = rules.engine
            matcher = engine._matcher
            for entry in entries[at:at + chunk]:
                start = clock()
                scan = engine.scan(entry, "bench")
                scanned = clock()
                if matcher is not None:
                    matcher.match(
                        scan, engine._admitted(scan.feed_name, scan.feed_tags),
                        lambda k, scan=scan, engine=engine: engine._match_one(
                            scan, engine.programs[k]))
                    spent[i]["normalise and scan"] += scanned - start
                    spent[i]["decide, hits and matches"] += clock() - scanned
                    continue
                found = engine._decide(scan)
                decided = clock()
                if found:
                    engine._matches(scan, found)
                spent[i]["normalise and scan"] += scanned - start
                spent[i]["decide"] += decided - scanned
                spent[i]["hits and matches"] += clock() - decided
    return [{stage: seconds / len(entries) * 1e6 for stage, seconds in costs.items()}
            for costs in spent]


def python_rate(rules: RuleSet, entries: list[Entry]) -> float:
    """Entries per second of the engine without its compiled parts (``POLICYBOT_NATIVE=0``)."""
    engine = Engine(rules.rules, native=False)
    start = time.perf_counter()
    for entry in entries:
        engine.match(entry, feed_name="bench")
    return len(entries) / (time.perf_counter() - start)


def baseline_rate(rules: RuleSet, entries: list[Entry],
                  regex: Callable[[Pattern], re.Pattern[str]]) -> tuple[float, float]:
    """(entries per second, mean rules matched per entry) of per-term `re` searches."""
    start = time.perf_counter()
    baseline = Baseline(rules, regex)
    fired = sum(baseline.match(e) for e in entries)
    return len(entries) / (time.perf_counter() - start), fired / len(entries)


def corpus_shape(rules: RuleSet, entries: list[Entry]) -> tuple[int, float, float, float]:
    """(distinct terms, terms found per entry, rule–term links per entry, rules with a term
    found per entry): how much the rules share their terms, seen from the entries."""
    users: dict[tuple[str, bool, bool, bool], set[str]] = {}
    for rule in rules.rules:
        for p in rule_patterns(rule):
            users.setdefault(p.key, set()).add(rule.id)
    engine = rules.engine
    found = links = touched = 0.0
    for entry in entries:
        keys = {engine.searches[sid].pattern.key
                for sid in engine.scan(entry, "bench").fields_of}
        found += len(keys)
        links += sum(len(users[k]) for k in keys)
        touched += len(set().union(*(users[k] for k in keys)))
    n = len(entries)
    return len(users), found / n, links / n, touched / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--baseline-entries", type=int, default=100)
    parser.add_argument("--corpus", choices=["realistic", "shared"], default="realistic")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rng = random.Random(args.seed)
    make_rule_files: Callable[[Path, int], None]
    if args.corpus == "realistic":
        vocab: Vocabulary = RealisticVocabulary(rng)
        entries = make_realistic_entries(args.entries, vocab, rng)

        def make_rule_files(directory: Path, count: int) -> None:
            make_realistic_rules(directory, count, vocab, random.Random(args.seed + 1))
    else:
        vocab = Vocabulary(rng)
        entries = make_entries(args.entries, vocab, rng)

        def make_rule_files(directory: Path, count: int) -> None:
            make_rules(directory, count, vocab, random.Random(args.seed + 1))
    sizes = [len(e.content.encode("utf-8")) for e in entries]
    normalize("ウォームアップ")  # build the normalisation tables (once a process) beforehand
    with tempfile.TemporaryDirectory() as tmp:
        small_dir, big_dir = Path(tmp, "small"), Path(tmp, "big")
        make_rule_files(small_dir, min(100, args.rules))
        make_rule_files(big_dir, args.rules)
        big, compile_s = timed_load(big_dir)  # first: nothing cached yet
        small, _ = timed_load(small_dir)
    print(f"{len(entries)} entries, {statistics.mean(sizes) / 1024:.1f} KB mean; "
          f"{len(big.rules)} rules loaded and compiled in {compile_s:.2f} s", flush=True)
    terms, found, links, touched = corpus_shape(big, entries[:1000])
    print(f"{terms} distinct terms; per entry {found:.1f} found, {links:.0f} rule–term links, "
          f"{touched:.0f} rules with a term found", flush=True)
    base_entries = entries[: args.baseline_entries]
    base_rate, base_fired = baseline_rate(big, base_entries, _regex)
    print(f"baseline (per-term re, {len(base_entries)} entries): {base_rate:,.1f} entries/s, "
          f"{base_fired:.1f} rules fire per entry", flush=True)
    tuned_rate, _ = baseline_rate(big, base_entries, _tuned_regex)
    print(f"tuned baseline (literal first): {tuned_rate:,.1f} entries/s", flush=True)
    (small_rate, small_cpu, small_fired), (big_rate, big_cpu, big_fired) = rates(
        [small, big], entries)
    print(f"engine, {len(small.rules)} rules: {small_rate:,.0f} entries/s "
          f"({small_cpu:,.0f} by CPU time; {small_fired:.1f} fire per entry)", flush=True)
    print(f"engine, {len(big.rules)} rules: {big_rate:,.0f} entries/s "
          f"({big_cpu:,.0f} by CPU time; {big_fired:.1f} fire per entry)", flush=True)
    python_big = python_rate(big, entries[: max(1, len(entries) // 4)])
    print(f"engine without its compiled parts, {len(big.rules)} rules: {python_big:,.0f} "
          "entries/s", flush=True)
    costs = dict(zip((len(small.rules), len(big.rules)), stage_costs([small, big], entries),
                     strict=True))
    load_after = os.getloadavg()
    stage_rows = [f"| {stage} | " + " | ".join(f"{c[stage]:.0f}" for c in costs.values())
                  + f" | {costs[len(big.rules)][stage] / costs[len(small.rules)][stage]:.1f}× |"
                  for stage in costs[len(big.rules)]]
    totals = [sum(c.values()) for c in costs.values()]
    stage_rows.append("| total | " + " | ".join(f"{t:.0f}" for t in totals)
                      + f" | {totals[-1] / totals[0]:.1f}× |")
    stage_table = (f"| stage (µs per entry) | {len(small.rules)} rules | {len(big.rules):,} rules "
                   "| growth |\n| --- | ---: | ---: | ---: |\n" + "\n".join(stage_rows))
    rows = [
        (f"baseline: per-term `re`, {len(big.rules)} rules", f"{base_rate:,.1f}", "", "1"),
        (f"tuned per-term `re` (literal first), {len(big.rules)} rules", f"{tuned_rate:,.1f}",
         "", f"{tuned_rate / base_rate:,.1f}"),
        (f"engine, {len(small.rules)} rules", f"{small_rate:,.0f}", f"{small_cpu:,.0f}",
         f"{small_rate / base_rate:,.0f}"),
        (f"engine, {len(big.rules)} rules", f"{big_rate:,.0f}", f"{big_cpu:,.0f}",
         f"{big_rate / base_rate:,.0f}"),
        (f"engine without its compiled parts (`POLICYBOT_NATIVE=0`), {len(big.rules)} rules",
         f"{python_big:,.0f}", "", f"{python_big / base_rate:,.0f}"),
    ]
    table = "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
    command = "python bench/match.py" + ("" if args.corpus == "realistic" else " --corpus shared")
    heading = (
        f"### match.py, {args.corpus} corpus, {date.today().isoformat()} (`{command} --write`; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on 2 cores)")
    summary = (
        f"{len(entries):,} entries (EN and JA, {min(sizes) / 1000:.1f}–{max(sizes) / 1000:.1f} KB, "
        f"mean {statistics.mean(sizes) / 1000:.1f} KB); {big_fired:.1f} rules fire per entry "
        f"at {len(big.rules):,} rules, {small_fired:.1f} at {len(small.rules)}. {terms:,} distinct "
        f"terms; an entry contains {found:.0f} of them, which {links:.0f} rule–term links "
        f"join to {touched:.0f} rules. Loading and compiling {len(big.rules):,} rule files: "
        f"{compile_s:.2f} s. From {len(small.rules)} to {len(big.rules):,} rules the engine "
        f"costs {small_rate / big_rate:.2f}× per entry. The engine's compiled parts "
        f"(bot/rules/_speedups.c) {'are' if native.compiled() else 'are NOT'} in use.")
    report = (
        f"\n{heading}\n\n{textwrap.fill(summary, 92)}\n\n"
        "| matcher | entries/s | entries/s (CPU time) | × baseline |\n"
        "| --- | ---: | ---: | ---: |\n" + table + "\n\n" + stage_table + "\n"
    )
    print(report)
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(report)


if __name__ == "__main__":
    main()
