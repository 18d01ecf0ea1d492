"""The compiled engine, the normaliser and the query printer, each against a simple
reference: the engine against one-rule-at-a-time evaluation, fast normalisation against the
character-chunk path, word indexes against word_numbers, printing against parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.model import Entry
from bot.rules import RuleSet, load_rules
from bot.rules import query as q
from bot.rules.text import WordIndex, _Builder, _slow_chunks, normalize, word_numbers


@pytest.fixture(scope="module")
def shipped() -> RuleSet:
    return load_rules(ROOT / "rules")


def test_the_engine_agrees_with_rule_by_rule_evaluation_on_every_shipped_example(
    shipped: RuleSet,
) -> None:
    checked = 0
    for rule in shipped.rules:
        for example in rule.examples:
            fast = shipped.match(example.entry, feed_name="example")
            slow = shipped.match_slowly(example.entry, feed_name="example")
            assert fast == slow, example.entry.title
            checked += 1
    assert checked >= 80


SHIPPED_WORDS = [
    "OSA", "osa", "Osaka", "Official Security Assistance", "政府安全保障能力強化支援",
    "Philippines", "フィリピン", "ﾌｨﾘﾋﾟﾝ", "radars", "Japan", "日本", "Ofcom", "Online Safety Act",
    "GCAP", "gcap", "日英伊の", "次期戦闘機", "Tempest", "fighter", "storm", "BAE Systems",
    "asset protection", "Royal Navy", "SDF", "自衛隊", "武器等防護", "英国", "trusts",
    "Defence Secretary", "appointed", "named", "resigns", "reshuffles", "cabinet", "Tokyo",
    "内閣改造", "防衛相", "起用", "football", "squad", "ＯＳＡ", "Djibouti", "ジブチ", "供与",
]
TEXTS = st.lists(
    st.one_of(st.sampled_from(SHIPPED_WORDS), st.sampled_from([" ", ", ", "の", "\n", "’s "])),
    max_size=14,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(title=TEXTS, summary=TEXTS, lang=st.sampled_from([None, "ja", "en"]))
def test_the_engine_agrees_with_rule_by_rule_evaluation_on_generated_entries(
    shipped: RuleSet, title: str, summary: str, lang: str | None
) -> None:
    entry = Entry(key="k", title=title, summary=summary, language=lang)
    assert shipped.match(entry, feed_name="x") == shipped.match_slowly(entry, feed_name="x")


def _reference(text: str, casefold: bool) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    out = _Builder()
    _slow_chunks(text, 0, len(text), casefold, out)
    built = out.build(text)
    return built.text, built.starts, built.ends


@settings(max_examples=400, deadline=None)
@given(text=st.text(max_size=40), casefold=st.booleans())
def test_fast_normalisation_equals_the_character_chunk_reference(text: str, casefold: bool) -> None:
    fast = normalize(text, casefold=casefold)
    assert (fast.text, fast.starts, fast.ends) == _reference(text, casefold)


@given(st.text(alphabet=st.sampled_from(list("ab Z\t\n.-é\u0301ﾊﾟＯ　’eﾋ…ß日本")), max_size=40))
def test_fast_normalisation_equals_the_reference_on_tricky_characters(text: str) -> None:
    fast = normalize(text)
    assert (fast.text, fast.starts, fast.ends) == _reference(text, True)


def test_a_half_width_voiced_mark_combines_with_the_kana_before_it() -> None:
    norm = normalize("ﾌｨﾘﾋﾟﾝ")
    assert norm.text == "フィリピン"
    assert norm.original_span(3, 4) == (3, 5)  # ピ came from ﾋﾟ


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab 1,日本語のテスト한국\U00020000\U0001D400é-")),
               max_size=40))
def test_word_index_gives_the_same_numbers_as_word_numbers(text: str) -> None:
    index = WordIndex(text)
    assert [index.number(i) for i in range(len(text))] == list(word_numbers(text))


# --- printing and parsing ----------------------------------------------------------------

LEAVES = st.one_of(
    st.builds(lambda w, p, c: q.Term(w, p, c, False, 0, 0),
              st.sampled_from(["gcap", "radar", "ジブチ", "and", "OR", "a:b", "x y"]),
              st.booleans(), st.booleans()),
    st.builds(lambda w: q.Term(w, False, False, False, 0, 0, regex=True),
              st.sampled_from(["fy\\d+", "a\\/b"])),
    st.builds(lambda n: q.TermRef(n, 0, 0), st.sampled_from(["osa", "uk_acts"])),
    st.builds(lambda n: q.ListRef(n, 0, 0), st.sampled_from(["osa_countries"])),
)


def _trees(children: st.SearchStrategy[q.Node]) -> st.SearchStrategy[q.Node]:
    return st.one_of(
        st.builds(lambda cs: q.And(tuple(cs), 0, 0), st.lists(children, min_size=2, max_size=3)),
        st.builds(lambda cs: q.Or(tuple(cs), 0, 0), st.lists(children, min_size=2, max_size=3)),
        st.builds(lambda c: q.Not(c, 0, 0), children),
        st.builds(lambda f, c: q.FieldScope(f, c, 0, 0), st.sampled_from(["title", "summary"]),
                  children),
        st.builds(lambda a, b, n, o: q.Near(a, b, n, o, 0, 0), LEAVES, LEAVES,
                  st.integers(0, 9), st.booleans()),
    )


TREES = st.recursive(LEAVES, _trees, max_leaves=8)


def _valid(term: q.Node) -> bool:
    """Prefix terms need a word of 3+ characters; keep generated trees within the grammar."""
    return all(not (isinstance(n, q.Term) and n.prefix and (n.regex or " " in n.text))
               for n in q.iter_nodes(term))


@settings(max_examples=300, deadline=None)
@given(TREES)
def test_printing_a_parsed_query_and_parsing_it_again_gives_the_same_tree(tree: q.Node) -> None:
    if not _valid(tree):
        return
    text = q.format_query(tree)
    again = q.parse_query(text)
    assert q.shape(again) == q.shape(tree), text
    assert q.format_query(again) == text


# --- regex terms -------------------------------------------------------------------------

def _rule(tmp_path: Path, body: str) -> RuleSet:
    (tmp_path / "r.yaml").write_text("id: r\ntitle: R\n" + body, encoding="utf-8")
    return load_rules(tmp_path)


def test_a_regex_term_matches_the_normalised_text_ignoring_case(tmp_path: Path) -> None:
    rules = _rule(tmp_path, "query: /fy20[0-9]{2}/ AND budget\n")
    assert rules.match_text("The ＦＹ2025 budget") == ["r"]
    assert rules.match_text("The FY25 budget") == []
    (match,) = rules.match(Entry("k", "The ＦＹ2025 budget"), feed_name="f")
    assert [(h.start, h.end, h.term) for h in match.hits] == [
        (4, 10, "/fy20[0-9]{2}/"), (11, 17, "budget")]


def test_case_makes_a_regex_term_exact(tmp_path: Path) -> None:
    rules = _rule(tmp_path, "query: case:/GCAP-[0-9]+/\n")
    assert rules.match_text("GCAP-2 news") == ["r"]
    assert rules.match_text("gcap-2 news") == []


def test_track_pairs_each_matched_rule_with_its_list_members(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "places.yaml").write_text(
        "- {term: Djibouti, aliases: [ジブチ]}\n- Fiji\n", encoding="utf-8")
    rules = _rule(tmp_path, "query: radar* AND @places\ntrack: places\n")
    found = rules.match(Entry("k", "Radars for ジブチ and Fiji"), feed_name="f")
    assert rules.tracked(found) == (("r", "Djibouti"), ("r", "Fiji"))


# --- the engine's constructors ---------------------------------------------------------

def test_the_engine_makes_hits_and_matches_equal_to_the_model_s_own() -> None:
    import pickle

    from bot.model import Hit, Match
    from bot.rules.engine import _new_hit, _new_match

    assert _new_hit is not Hit and _new_match is not Match  # the fast path is in use
    hit = _new_hit("title", 4, 10, "budget")
    assert hit == Hit("title", 4, 10, "budget")
    assert hash(hit) == hash(Hit("title", 4, 10, "budget"))
    assert pickle.loads(pickle.dumps(hit)) == hit
    match = _new_match("r", "v1", (hit,))
    assert match == Match("r", "v1", (Hit("title", 4, 10, "budget"),))
    with pytest.raises(AttributeError):
        match.rule_id = "other"  # type: ignore[misc]


def test_a_class_of_another_shape_keeps_its_own_constructor() -> None:
    from dataclasses import dataclass

    from bot.rules.engine import _fast_constructor

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int
        b: int
        c: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a")

    @dataclass(frozen=True)
    class Unslotted:
        a: int
        b: int
        c: int

    assert _fast_constructor(Checked) is Checked
    assert _fast_constructor(Unslotted) is Unslotted
