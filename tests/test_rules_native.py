"""The engine's compiled parts (``bot/rules/_speedups.c``) against the engine in Python.

The term search must find exactly the same occurrences — the same spans for the same
searches in the same fields — on any text: terms that start with word characters and with
punctuation, prefixes, case-sensitive terms, Japanese, characters beyond the BMP, ligatures
and letters whose case folding changes the length of the text. The matcher (deciding, hits
and matches) must give the same matches; tests/test_rules_engine_differential.py checks it
on generated queries, exclusions, scopes and track lists as well.
"""

from __future__ import annotations

import gc
import json
import os
import random
import tempfile
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rules_engine_differential import bench

from bot.model import Entry, Hit, Match
from bot.rules import RuleSet, load_rules, native
from bot.rules.engine import Engine, Scan, _Near
from bot.rules.text import _compiled_normalizer, normalize, python_normalize

needs_native = pytest.mark.skipif(not native.available(),
                                  reason="the compiled search was not built (no C compiler)")


def test_the_compiled_search_was_built_where_ci_requires_it() -> None:
    # .ci/run sets POLICYBOT_REQUIRE_NATIVE=1: there the extension must have been built, so
    # that the tests below run rather than skip.
    if os.environ.get("POLICYBOT_REQUIRE_NATIVE") == "1":
        assert native.available()
    assert native.compiled() is (None if not native.available() else native._compiled)


def test_policybot_native_0_turns_the_compiled_search_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYBOT_NATIVE", "0")
    assert native.compiled() is None
    rules = _rules(["gcap"])
    engine = Engine(rules.rules)
    assert engine._all is not None and engine._all.native is None
    assert [m.rule_id for m in engine.match(Entry(key="k", title="GCAP"), feed_name="f")] == ["r"]


TERMS = [
    "gcap", "tempest", "storm tempest", "radar*", "coastal radar*", "fighter", "u.k.",
    "{term: GCAP, case: sensitive}", "{term: Osa, case: sensitive}", "{term: ß, case: sensitive}",
    "次期戦闘機", "防衛", "防衛省", "の", "日英", "gcap計画", "計画", "ジブチ",
    "𠮟", "𠮟る", "fiji", "ﬁji", "straße", "é", "e\u0301t", "-led", "#osa", "osa",
    "r&d", "x", "cafe\u0301", "radars*",
]
TOKENS = [
    "GCAP", "gcap", "Gcaps", "tempest", "Tempest", "Storm  Tempest", "storm\ntempest",
    "radar", "radars", "Radar", "coastal radars", "fighter", "fighters", "U.K.", "u.k.s",
    "Osa", "OSA", "osa", "#OSA", "#osa", "次期戦闘機", "防衛省", "防衛", "の", "日英伊のGCAP計画",
    "ジブチ", "ｼﾞﾌﾞﾁ", "𠮟る", "𠮟", "𝐀𝐁", "Fiji", "ﬁji", "Straße", "STRASSE", "ß", "ẞ",
    "é", "e\u0301t", "İstanbul", "UK-led", "-led", "R&D", "x", "xx", "x1", "café", "cafe\u0301",
    "the", ",", ".", " ", "\n", "、", "。", "’", "…", "a\u00adb",
]
TEXT = (st.lists(st.sampled_from(TOKENS), max_size=20).map(" ".join)
        | st.lists(st.sampled_from(TOKENS), max_size=20).map("".join))


def _term(text: str) -> str:
    return text if text.startswith("{") else json.dumps(text, ensure_ascii=False)  # YAML


def _rules(terms: list[str]) -> RuleSet:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "r.yaml").write_text(
            "id: r\ntitle: R\nterms:\n  a: [" + ", ".join(map(_term, terms)) + "]\n"
            "query: '$a'\n", encoding="utf-8")
        return load_rules(Path(tmp))


def _engines(rules: RuleSet) -> tuple[Engine, Engine]:
    return Engine(rules.rules, native=False), Engine(rules.rules, native=True)


def _same_scan(reference: Engine, compiled: Engine, entry: Entry) -> None:
    expected = reference.scan(entry, "f")
    got = compiled.scan(entry, "f")
    assert got.spans == expected.spans, entry
    assert got.fields_of == expected.fields_of, entry
    assert compiled.match(entry, feed_name="f") == reference.match(entry, feed_name="f")


TERM_SETS = st.lists(st.sampled_from(TERMS), min_size=1, max_size=10, unique=True)


@needs_native
@settings(max_examples=300, deadline=None)
@given(terms=TERM_SETS, title=TEXT, content=TEXT)
def test_the_compiled_search_finds_what_the_python_search_finds(
        terms: list[str], title: str, content: str) -> None:
    reference, compiled = _engines(_rules(terms))
    automata = [a for a in (compiled._all, compiled._exact, compiled._odd) if a is not None]
    assert automata and all(a.native is not None for a in automata)
    _same_scan(reference, compiled, Entry(key="k", title=title, content=content))


@needs_native
@pytest.mark.parametrize(("terms", "text", "spans"), [
    (["gcap"], "GCAP, gcaps and xgcap: gcap", [(0, 4), (23, 27)]),
    (["radar*"], "Radars radar-guided preradar radar", [(0, 6), (7, 12), (29, 34)]),
    (["storm tempest"], "storm  tempest storm tempests", [(0, 13)]),
    (["防衛"], "防衛省の防衛", [(0, 2), (4, 6)]),
    (["-led"], "UK-led -led", [(2, 6), (7, 11)]),
    (["aa"], "aaaa aa", [(5, 7)]),
    (["の"], "ののの", [(0, 1), (1, 2), (2, 3)]),
    (["𠮟る"], "𠮟る𠮟る", [(0, 2), (2, 4)]),
])
def test_the_compiled_search_finds_these_spans(terms: list[str], text: str,
                                              spans: list[tuple[int, int]]) -> None:
    reference, compiled = _engines(_rules(terms))
    entry = Entry(key="k", title=text)
    scan = compiled.scan(entry, "f")
    assert sorted(scan.spans.values()) == [spans]  # spans in the normalised text
    _same_scan(reference, compiled, entry)


@needs_native
def test_the_compiled_search_agrees_on_the_bench_corpus() -> None:
    rng = random.Random(5)
    vocab = bench.RealisticVocabulary(rng)
    with tempfile.TemporaryDirectory() as tmp:
        bench.make_realistic_rules(Path(tmp), 150, vocab, random.Random(6))
        rules = load_rules(Path(tmp))
    reference, compiled = _engines(rules)
    found = 0
    for entry in bench.make_realistic_entries(60, vocab, rng):
        _same_scan(reference, compiled, entry)
        found += len(compiled.scan(entry, "f").spans)
    assert found > 60 * 10  # the corpus is not vacuous


@needs_native
def test_the_scanner_refuses_what_it_cannot_file() -> None:
    scanner_type = native._compiled.Scanner  # type: ignore[union-attr]
    bitmap = bytes(8192)
    with pytest.raises(ValueError, match="8192"):
        scanner_type(["a"], [((0, True, True, False, None),)], [(0, "a")], b"", bool)
    with pytest.raises(ValueError, match="does not start its key"):
        scanner_type(["ab"], [((0, True, True, False, None),)], [(0, "b")], bitmap, bool)
    with pytest.raises(ValueError, match="wrong length"):
        scanner_type(["ab"], [((0, False, False, False, None),)], [(3, "a")], bitmap, bool)
    with pytest.raises(ValueError, match="no such table"):
        scanner_type(["ab"], [((0, False, False, False, None),)], [(9, "a")], bitmap, bool)
    with pytest.raises(ValueError, match="differ in length"):
        scanner_type(["ab"], [], [], bitmap, bool)


@needs_native
@settings(max_examples=200, deadline=None)
@given(terms=TERM_SETS, title=TEXT, content=TEXT)
def test_the_compiled_pid_hits_are_the_python_ones(
        terms: list[str], title: str, content: str) -> None:
    # Hits in the original text, through ligatures and collapsed white space (the offset
    # map's pieces), and the "None when two overlap" case.
    _, compiled = _engines(_rules(terms))
    entry = Entry(key="k", title=title, content=content)
    reference, got = compiled.scan(entry, "f"), compiled.scan(entry, "f")
    assert compiled._matcher is not None
    for pid in sorted(reference.pids()):
        assert compiled._matcher.pid_hits(got, pid) == reference.pid_hits(pid)


@needs_native
def test_the_compiled_matcher_keeps_rule_order_scopes_and_exclusions(tmp_path: Path) -> None:
    rules = {
        "a-first.yaml": "id: a-first\ntitle: A\nquery: gcap\n",
        "b-scoped.yaml": "id: b-scoped\ntitle: B\nquery: gcap\nscope:\n  feeds: [mod-ja]\n",
        "c-excluded.yaml": ("id: c-excluded\ntitle: C\nquery: gcap\nexclude:\n"
                            "  football: tempest\n"),
        "d-off.yaml": "id: d-off\ntitle: D\nquery: gcap\nenabled: false\n",
        "e-near.yaml": "id: e-near\ntitle: E\nquery: gcap NEAR/2 treaty\n",
        "f-guarded.yaml": "id: f-guarded\ntitle: F\nquery: (gcap AND treaty) OR tempest\n",
    }
    for name, text in rules.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    ruleset = load_rules(tmp_path)
    reference, compiled = _engines(ruleset)
    cases = [
        ("GCAP treaty signed", "mod-ja", ["a-first", "b-scoped", "c-excluded", "e-near",
                                          "f-guarded"]),
        ("GCAP treaty signed", "other", ["a-first", "c-excluded", "e-near", "f-guarded"]),
        ("GCAP and the Tempest", "other", ["a-first", "f-guarded"]),
        ("GCAP: a long way from any treaty", "other", ["a-first", "c-excluded", "f-guarded"]),
    ]
    for title, feed, expected in cases:
        entry = Entry(key="k", title=title)
        got = compiled.match(entry, feed_name=feed)
        assert [m.rule_id for m in got] == expected, title
        assert got == reference.match(entry, feed_name=feed)


@needs_native
def test_a_rule_whose_slots_take_more_than_a_word_matches_the_same() -> None:
    # Twelve exclusions of six terms each: 88 accumulator slots a rule, more than the one
    # 64-bit word the compiled matcher tests at once, so it tests them one by one.
    exclusions = "".join(
        f"  x{i}: '{' AND '.join(f'w{i}{c}' for c in 'abcdef')}'\n" for i in range(12))
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "r.yaml").write_text(
            "id: r\ntitle: R\nquery: 'gcap AND (treaty OR signed) AND (uk OR japan)'\n"
            "exclude:\n" + exclusions, encoding="utf-8")
        rules = load_rules(Path(tmp))
    reference, compiled = _engines(rules)
    assert compiled._stride > 64
    for title, matches in [("GCAP treaty: UK and Japan", 1), ("GCAP treaty", 0),
                           ("GCAP signed, Japan w3a w3b w3c w3d w3e w3f", 0),
                           ("GCAP signed, Japan w3a w3b w3c w3d w3e", 1),
                           ("uk gcap treaty w11a w11b w11c w11d w11e w11f", 0)]:
        entry = Entry(key="k", title=title)
        got = compiled.match(entry, feed_name="f")
        assert len(got) == matches, title
        assert got == reference.match(entry, feed_name="f"), title


@needs_native
def test_the_matcher_refuses_tables_that_do_not_fit() -> None:
    rules = _rules(["gcap"])
    engine = Engine(rules.rules)
    assert engine._matcher is not None
    matcher_type = type(engine._matcher)
    program = ([(1, [0])], [], "r", "v", -1, (), frozenset(), -1)
    good = dict(stride=engine._stride, programs=[program],
                pids_of=[[0]], pid_sid=[0], pid_label=["gcap"], sid_casefold=[True],
                field_names=("title",), match_type=Match, hit_type=Hit,
                init=bytes((engine._stride + 7) // 8), contributions=[[(1, [0])]],
                query=([0], 1, b"\x01", b"\x01"), layers=[],
                code=[1, 4, 1, 0], constants=[], near=engine._near_compiled,
                near_python=engine._near_python)
    matcher_type(**good)  # the shape the engine builds

    def tested(code: list[int], test: int = 0, hits: int = -1, **more: object) -> dict[str, object]:
        return {"code": code, "programs": [([(1, [0])], [], "r", "v", test, (), frozenset(), hits)],
                "query": ([0], 1, b"\x01", b"\x00"), **more}

    matcher_type(**{**good, **tested([2, 6, 1, 4, 1, 0])})  # AND of one ANY
    for change, message in [
        (dict(pid_sid=[5]), "not in"),
        (dict(programs=[([(1, [9])], [], "r", "v", -1, (), frozenset(), -1)]), "not in"),
        (dict(contributions=[[(1, [10_000])]]), "not in"),
        (dict(init=b""), "expected 1 bytes"),
        (dict(match_type=Entry), "slots"),
        (dict(sid_casefold=[]), "differ in length"),
        (dict(near=None), "Near"),
        (tested([1, 4, 1, 0], test=-1), "no test"),  # not decided by its clauses, no test
        (tested([1, 4, 1, 0], test=4), "out of range"),
        (tested([1, 4, 1, 7]), "malformed"),  # no search 7
        (tested([1, 9, 1, 0]), "malformed"),  # longer than the code
        (tested([42, 2]), "malformed"),  # no such op
        (tested([2, 6, 1, 5, 1, 0]), "malformed"),  # a child longer than its parent
        (tested([4, 2]), "malformed"),  # NOT of nothing
        (tested([5, 3, 0]), "malformed"),  # a constant that is not there
        (tested([1, 4, 1, 0, 10, 2], test=4), "malformed"),  # a statement where a test goes
        (tested([1, 4, 1, 0, 7, 4, 1, 0], hits=4), "ST_ALL"),  # statements not in a block
    ]:
        with pytest.raises((ValueError, TypeError), match=message):
            matcher_type(**{**good, **change})


NORMALIZE_ALPHABET = (
    "aZ09 ,.'-"  # plain
    "\n\t\r\x0b\x0c\x1c\x85\xa0\u1680\u2000\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # spaces
    "’‘“”–—−ＡＢａ０（）！　"  # one-to-one folds
    "日本のジブチ防衛、。"  # Japanese NFKC leaves alone
    "ｼﾞﾌﾞﾁﬁﬂß…é\u00ad\u200bİ" "e\u0301"  # expand, vanish or combine: Python's way
    "𠮟𝐀"  # beyond the BMP
)


@needs_native
@settings(max_examples=1000, deadline=None)
@given(text=st.text(alphabet=NORMALIZE_ALPHABET, max_size=40))
def test_the_compiled_normaliser_is_the_python_one(text: str) -> None:
    assert normalize(text, casefold=False) == python_normalize(text, casefold=False)


@needs_native
@pytest.mark.parametrize("text", [
    "Japan’s  OSA\n\nnews", "ＧＣＡＰ　treaty", "  lead", "trail \n", "a \u00a0b", "plain",
    "日本の防衛、ジブチ。", "",
])
def test_the_compiled_normaliser_takes_ordinary_text(text: str) -> None:
    compiled = _compiled_normalizer()
    assert compiled is not None
    found = compiled.normalize(text)
    assert found is not None  # not handed back to Python
    assert found == python_normalize(text, casefold=False)


@needs_native
@pytest.mark.parametrize("text", ["ﬁji", "Straße", "e\u0301", "ｼﾞﾌﾞﾁ", "𠮟る", "a\u00adb"])
def test_the_compiled_normaliser_leaves_the_rest_to_python(text: str) -> None:
    compiled = _compiled_normalizer()
    assert compiled is not None
    assert compiled.normalize(text) is None
    assert normalize(text, casefold=False) == python_normalize(text, casefold=False)


@needs_native
@settings(max_examples=1000, deadline=None)
@given(text=st.text(alphabet=NORMALIZE_ALPHABET + "ΣΑσςẞǅﬀİıＧＣＡＰ", max_size=40)
       | st.text(max_size=20))
def test_the_compiled_casefold_is_str_casefold(text: str) -> None:
    compiled = _compiled_normalizer()
    assert compiled is not None
    found = compiled.casefold(text)  # None: not every character folds to one, str's way
    assert (text.casefold() if found is None else found) == text.casefold()


def _near_decisions(engine: Engine, scan: Scan) -> tuple[int, int]:
    """Check the compiled decision of every NEAR of ``engine``'s rules on ``scan`` against
    Engine._near_python: how many the compiled one decided (it hands the others back), and
    how many there are."""
    assert engine._matcher is not None and engine._near_compiled is not None
    specs = [c for c in engine._matcher.constants if isinstance(c, _Near)]
    decided = 0
    for spec in specs:
        got = engine._near_compiled.decide(spec, scan)
        if got is not None:
            decided += 1
            assert got == engine._near_python(spec, scan, None), (spec, scan.entry)
    return decided, len(specs)


def _fallbacks(engine: Engine, entry: Entry) -> tuple[list[Match], int]:
    """The compiled matcher's matches, and how many rules it handed to Engine._match_one."""
    assert engine._matcher is not None
    scan = engine.scan(entry, "f")
    handed: list[int] = []

    def fallback(i: int) -> Match:
        handed.append(i)
        return engine._match_one(scan, engine.programs[i])

    got = engine._matcher.match(scan, engine._admitted(scan.feed_name, scan.feed_tags), fallback)
    return got, len(handed)


NEAR_TOKENS = ["gcap", "GCAP", "treaty", "Treaty", "the", "of", "a", "signed", "x1", ",", ".",
               "日英", "次期戦闘機", "の", "条約", "防衛", "ジブチ", "ー", "、", " ", "\n", "ﬁ",
               "𠮟", "-", "U.K.", "gcap's"]
NEAR_QUERIES = ["gcap NEAR/0 treaty", "gcap NEAR/2 treaty", "gcap ONEAR/1 treaty",
                "treaty ONEAR/3 gcap", "日英 NEAR/1 条約", "case:GCAP NEAR/2 treaty",
                "(gcap OR 次期戦闘機) NEAR/2 (treaty OR 条約)", "ジブチ ONEAR/0 防衛",
                "gcap NEAR/1 signed"]


@needs_native
@settings(max_examples=300, deadline=None)
@given(query=st.sampled_from(NEAR_QUERIES),
       words=st.lists(st.sampled_from(NEAR_TOKENS), max_size=24),
       joiner=st.sampled_from([" ", ""]))
def test_the_compiled_near_decides_as_the_python_one(query: str, words: list[str],
                                                      joiner: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "r.yaml").write_text(f"id: r\ntitle: R\nquery: '{query}'\n", encoding="utf-8")
        rules = load_rules(Path(tmp))
    reference, compiled = _engines(rules)
    entry = Entry(key="k", title=joiner.join(words), summary=" ".join(reversed(words)))
    _near_decisions(compiled, compiled.scan(entry, "f"))
    assert compiled.match(entry, feed_name="f") == reference.match(entry, feed_name="f")


@needs_native
def test_the_compiled_near_takes_ordinary_text() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "r.yaml").write_text("id: r\ntitle: R\nquery: 'gcap NEAR/2 treaty'\n",
                                       encoding="utf-8")
        rules = load_rules(Path(tmp))
    reference, compiled = _engines(rules)
    for title, matches in [("GCAP treaty", 1), ("GCAP: a long way from any treaty", 0),
                           ("the treaty on GCAP", 1), ("日英のGCAP条約 treaty", 1)]:
        entry = Entry(key="k", title=title)
        decided, specs = _near_decisions(compiled, compiled.scan(entry, "f"))
        assert decided == specs > 0, title  # every one decided in C, none handed back
        got, handed = _fallbacks(compiled, entry)
        assert len(got) == matches, title
        assert handed == 0, title  # the NEAR pairs' hits too
        assert got == reference.match(entry, feed_name="f"), title


@needs_native
def test_the_compiled_parts_refuse_bad_arguments_with_exceptions() -> None:
    rules = _rules(["gcap", "radar*", "防衛"])
    engine = Engine(rules.rules)
    assert engine._all is not None and engine._matcher is not None
    scanner, matcher = engine._all.native, engine._matcher
    near = engine._near_compiled
    normalizer = _compiled_normalizer()
    occurrences = native._compiled.Occurrences  # type: ignore[union-attr]
    assert near is not None and normalizer is not None
    calls = [
        (lambda: scanner.search(b"gcap", None, 0, occurrences()), TypeError),
        (lambda: scanner.search("gcap", None, 9, occurrences()), ValueError),
        (lambda: scanner.search("gcap", "longer text", 0, occurrences()), ValueError),
        (lambda: scanner.search("gcap", None, 0, {0: [(0, 4)]}), TypeError),
        (lambda: occurrences().set(-1, []), ValueError),
        (lambda: occurrences().set(0, [(1,)]), TypeError),
        (lambda: matcher.match(object(), b"\x01", lambda i: None), AttributeError),
        (lambda: matcher.match(engine.scan(Entry(key="k", title="gcap"), "f"), b"", print),
         ValueError),
        (lambda: matcher.pid_hits(object(), 0), AttributeError),
        (lambda: matcher.pid_hits(engine.scan(Entry(key="k", title="x"), "f"), 10**6),
         ValueError),
        (lambda: near.decide(object(), object()), AttributeError),
        (lambda: normalizer.normalize(b"bytes"), TypeError),
        (lambda: normalizer.casefolded("not a Normalized"), TypeError),
    ]
    for call, error in calls:
        with pytest.raises(error):
            call()
    # and the engine still works afterwards
    assert [m.rule_id for m in engine.match(Entry(key="k", title="GCAP radars"),
                                            feed_name="f")] == ["r"]


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=needs_native)])
def test_an_engine_no_longer_used_is_freed(compiled: bool) -> None:
    # The compiled matcher holds the rules' generated functions, whose globals refer back to
    # the engine: the garbage collector must see through it, or every rule set a reload
    # replaces would stay in memory.
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "r.yaml").write_text(
            "id: r\ntitle: R\nquery: 'gcap NEAR/2 treaty OR (tempest AND fighter) OR osa'\n"
            "exclude:\n  x: '(football AND club) OR feed:sport'\n", encoding="utf-8")
        rules = load_rules(Path(tmp))
    engines = []
    for _ in range(3):
        engine = Engine(rules.rules, native=compiled)
        assert (engine._matcher is not None) == compiled
        engine.match(Entry(key="k", title="GCAP treaty"), feed_name="f")
        engines.append(weakref.ref(engine))
        del engine
    gc.collect()
    assert [ref() for ref in engines] == [None, None, None]


@needs_native
def test_run_says_when_rules_are_matched_in_python(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli.service import _print_startup

    settings: Any = SimpleNamespace(delivery_mode="console", rules_dir="rules")
    monkeypatch.setenv("POLICYBOT_NATIVE", "0")
    _print_startup(settings, 4)
    assert "rule matching in Python (POLICYBOT_NATIVE=0)" in capsys.readouterr().err
    monkeypatch.setattr(native, "_compiled", None)  # as when it was not built
    monkeypatch.delenv("POLICYBOT_NATIVE")
    _print_startup(settings, 4)
    assert "bot/rules/_speedups.c was not built" in capsys.readouterr().err


@needs_native
def test_run_says_nothing_of_it_when_the_compiled_parts_are_in_use(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli.service import _print_startup

    monkeypatch.delenv("POLICYBOT_NATIVE", raising=False)
    _print_startup(SimpleNamespace(delivery_mode="console", rules_dir="rules"), 4)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "4 rules from rules/" in err and "rule matching in Python" not in err
