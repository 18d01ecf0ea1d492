"""The query language: parsing, evaluation, boundaries, normalisation and highlights."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.model import Entry
from bot.rules.match import DEFAULT_FIELDS, Document, Occurrence, compile_query, evaluate
from bot.rules.query import QuerySyntaxError, parse_query
from bot.rules.terms import ListEntry, TermList, make_pattern
from bot.rules.text import normalize, word_numbers


def _lists() -> dict[str, TermList | None]:
    ph = ListEntry(
        "Philippines",
        (
            make_pattern("Philippines", label="Philippines"),
            make_pattern("フィリピン", label="Philippines"),
            make_pattern("Pilipinas", label="Philippines"),
        ),
    )
    dj = ListEntry("Djibouti", (make_pattern("Djibouti"), make_pattern("ジブチ", label="Djibouti")))
    return {"countries": TermList("countries", (ph, dj))}


def _terms() -> dict[str, TermList | None]:
    return {
        "acr": TermList("acr", (ListEntry("OSA", (make_pattern("OSA", case_sensitive=True),)),)),
        "sig": TermList(
            "sig",
            (
                ListEntry("radar*", (make_pattern("radar", prefix=True),)),
                ListEntry("patrol boats", (make_pattern("patrol boats"),)),
            ),
        ),
    }


def run(query: str, title: str = "", summary: str = "") -> tuple[bool, Document, list[Occurrence]]:
    tree = parse_query(query)
    result = compile_query(query, tree, terms=_terms(), lists=_lists())
    assert not result.errors, result.errors
    assert result.node is not None
    doc = Document(Entry(key="k", title=title, summary=summary), feed_name="mofa", feed_tags=["jp"])
    ok, occs = evaluate(result.node, doc, DEFAULT_FIELDS)
    return ok, doc, list(occs)


def matches(query: str, title: str, summary: str = "") -> bool:
    return run(query, title, summary)[0]


# --- evaluation, table-driven --------------------------------------------------------------

CASES = [
    # (query, text, expected)
    ("radar", "Japan funds coastal radar", True),
    ("radar", "Japan funds coastal radars", False),  # no implicit stemming
    ("radar*", "Japan funds coastal radars", True),
    ("radar*", "Japan funds radarless boats", True),
    ("radar*", "Japan funds coastal sradars", False),  # prefix is whole-word on the left
    ('"patrol boats"', "two patrol  boats delivered", True),  # white space collapses
    ('"patrol boats"', "two patrol\nboats delivered", True),
    ('"patrol boats"', "boats on patrol", False),
    ('"patrol boat*"', "patrol boatswain", True),
    ("a AND b", "a then b", True),
    ("a AND b", "a only", False),
    ("a OR b", "b only", True),
    ("a OR b", "neither", False),
    ("a AND NOT b", "a only", True),
    ("a AND NOT b", "a and b", False),
    ("NOT NOT a", "a", True),
    ("(a OR b) AND c", "b c", True),
    ("(a OR b) AND c", "a b", False),
    ("a AND (b OR (c AND d))", "a c d", True),
    ("a AND (b OR (c AND d))", "a c", False),
    ("and", "salt and pepper", True),  # lower-case operators are words
    ("OSA", "Osaka expo", False),
    ("OSA", "OSA grants", True),
    ("OSA", "osa grants", True),  # case-insensitive by default
    ("case:OSA", "osa grants", False),
    ("case:OSA", "OSA grants", True),
    ("case:OSA", "ＯＳＡ grants", True),  # NFKC before the case check
    ('case:"Official Secrets"', "official secrets", False),
    ("$acr", "Osa peninsula", False),
    ("$acr", "Japan's OSA", True),
    ("$sig", "radars and patrol boats", True),
    ("@countries", "フィリピンに供与", True),
    ("@countries", "Pilipinas", True),
    ("@countries", "the Philippine Sea", False),
    ("title:gcap", "GCAP", True),
    ("summary:gcap", "GCAP", False),
    ("feed:mofa AND gcap", "GCAP", True),
    ("feed:jp AND gcap", "GCAP", True),  # a tag
    ("feed:mod AND gcap", "GCAP", False),
    ("lang:ja AND gcap", "GCAP", False),
    ("Timor-Leste", "Timor‐Leste", True),  # U+2010 hyphen folds to '-'
    ("Japan's", "Japan’s radar", True),  # typographic apostrophe folds
    ("Straße", "STRASSE", True),  # case folding, not lower()
]


@pytest.mark.parametrize(("query", "text", "expected"), CASES)
def test_query_evaluates_as_documented(query: str, text: str, expected: bool) -> None:
    assert matches(query, text) is expected


# --- script-aware boundaries ---------------------------------------------------------------

BOUNDARIES = [
    ("GCAP", "日英伊のGCAP計画", True),  # Latin term between kana/kanji: Python's \b says no
    ("GCAP", "GCAPS", False),
    ("GCAP", "GCAP2035", False),  # a digit is a word character
    ("GCAP", "G-CAP valves", False),
    ("GCAP", "(GCAP)", True),
    ("GCAP", "GCAP's budget", True),
    ("OSA", "Osaka", False),
    ("OSA", "mimosa", False),
    ("OSA", "ＯＳＡ支援", True),  # fullwidth
    ("OSA", "OSÁ", False),  # an accented letter is a letter
    ("OSA", "OSA\u0301", False),  # ... also when the accent is a combining mark
    ("計画", "GCAP計画", True),  # CJK terms are substrings
    ("フィリピン", "ﾌｨﾘﾋﾟﾝ沿岸警備隊", True),  # half-width kana → full
    ("ジブチ", "ジブチ共和国", True),
    ("GCAP計画", "XGCAP計画", False),  # a Latin edge keeps its boundary in a mixed term
    ("GCAP計画", "のGCAP計画です", True),
    ("Djibouti", "ジブチDjiboutiジブチ", True),
    ("Bangkok", "กรุงเทพBangkok", True),  # Thai is written without spaces, like CJK
    ("Philippines", "Philippines", True),
    ("SDF", "JSDF", False),
    ("SDF", "SDF-led", True),
    ("U.K.", "the U.K. and Japan", True),
    ("U.K.", "U.K.S.", True),  # a term that ends in punctuation has no right boundary
]


@pytest.mark.parametrize(("term", "text", "expected"), BOUNDARIES)
def test_word_boundaries_follow_the_script(term: str, text: str, expected: bool) -> None:
    query = f'"{term}"' if not term.isalnum() else term
    assert matches(query, text) is expected


# --- highlights ----------------------------------------------------------------------------


def hits_for(query: str, title: str) -> list[str]:
    ok, doc, occs = run(query, title)
    assert ok
    return [title[h.start : h.end] for h in (doc.hit(o) for o in occs)]


def test_a_fullwidth_hit_slices_the_original_fullwidth_text() -> None:
    assert hits_for("OSA", "日本のＯＳＡで供与") == ["ＯＳＡ"]


def test_a_half_width_kana_hit_slices_the_original() -> None:
    assert hits_for("フィリピン", "対象国はﾌｨﾘﾋﾟﾝです") == ["ﾌｨﾘﾋﾟﾝ"]


def test_a_phrase_across_a_line_break_slices_the_original_white_space() -> None:
    assert hits_for('"patrol boats"', "two patrol\n   boats") == ["patrol\n   boats"]


def test_a_prefix_hit_covers_the_whole_word() -> None:
    assert hits_for("radar*", "new Radars, old radar") == ["Radars", "radar"]


def test_a_hit_after_an_expanding_case_fold_keeps_its_offsets() -> None:
    # ß casefolds to "ss": offsets after it must still index the original.
    assert hits_for("gcap", "Straße GCAP") == ["GCAP"]


def test_a_list_hit_reports_the_canonical_name_for_an_alias() -> None:
    ok, doc, occs = run("@countries", "フィリピンとジブチ")
    assert [doc.hit(o).term for o in occs] == ["Philippines", "Djibouti"]


def test_normalisation_maps_every_character_back_into_the_original() -> None:
    text = "ＯＳＡ  ﾌｨﾘﾋﾟﾝ\u00adcafe\u0301 Straße ’"
    norm = normalize(text)
    assert norm.text == "osa フィリピンcafé strasse '"
    assert len(norm.starts) == len(norm.ends) == len(norm.text)
    assert all(0 <= s < e <= len(text) for s, e in zip(norm.starts, norm.ends, strict=True))


# --- NEAR ----------------------------------------------------------------------------------

NEAR_CASES = [
    ("radar NEAR/2 Philippines", "radar for the Philippines", True),  # 2 words between
    ("radar NEAR/1 Philippines", "radar for the Philippines", False),
    ("Philippines NEAR/2 radar", "radar for the Philippines", True),  # any order
    ("Philippines ONEAR/2 radar", "radar for the Philippines", False),  # ONEAR keeps order
    ("radar ONEAR/2 Philippines", "radar for the Philippines", True),
    ("radar NEAR/0 Philippines", "radar Philippines", True),
    ("(radar OR boats) NEAR/1 @countries", "boats to フィリピン", True),
    ("$sig NEAR/3 @countries", "radars to the Philippines", True),
    ("レーダー NEAR/2 フィリピン", "フィリピンに沿岸レーダー", True),  # 2 kana/kanji = 1 word
    ("レーダー NEAR/1 フィリピン", "フィリピンに沿岸監視用のレーダー", False),
    ("title:(radar NEAR/1 Philippines)", "radar Philippines", True),
]


@pytest.mark.parametrize(("query", "text", "expected"), NEAR_CASES)
def test_near_counts_words_between_the_terms(query: str, text: str, expected: bool) -> None:
    assert matches(query, text) is expected


def test_near_does_not_join_terms_in_different_fields() -> None:
    assert not matches("radar NEAR/5 Philippines", "radar", summary="Philippines")


def test_word_numbers_count_two_cjk_characters_as_one_word() -> None:
    assert word_numbers("ab 日本語です") == (0, 0, 0, 1, 1, 2, 2, 3)


# --- syntax errors -------------------------------------------------------------------------

SYNTAX_ERRORS = [
    # (query, offset, words the message must contain)
    ("a AND b OR c", 8, "AND and OR at the same level need parentheses: write (a AND b) OR c "
                        "or a AND (b OR c)"),
    ("a b", 2, 'write "a b" for the phrase or a AND b'),
    ('"a b" c', 6, 'write "a b" AND c'),
    ("a NOT b", 2, "write a AND NOT b"),
    ("(a OR b", 7, "missing ')' to close the '(' at column 1"),
    ("a)", 1, "unexpected ')'"),
    ("", 0, "the query is empty"),
    ("a AND", 5, "AND needs a term after it"),
    ("NOT", 3, "NOT needs a term after it"),
    ('"abc', 0, 'unterminated phrase: add the closing "'),
    ('""', 0, "empty phrase"),
    ("ab*c", 2, "'*' is only allowed at the end of a word"),
    ('"x y"*', 5, "put the * inside the quotes"),
    ("titel:x", 0, "unknown field 'titel:'; did you mean title:?"),
    ("case: OSA", 0, "case: must be followed directly by a word"),
    ("a NEAR b", 2, "NEAR needs a distance in words, e.g. NEAR/5"),
    ("a NEAR/3 NOT b", 9, "NOT cannot sit inside NEAR"),
    ("a NEAR/3 b NEAR/3 c", 11, "NEAR cannot be chained"),
    ("$", 0, "'$' must be followed by a term list name"),
    ("osa AND /osa", 8, "unterminated regular expression: add the closing /"),
    ("osa OR //", 7, "empty regular expression //"),
    ("()", 0, "empty parentheses"),
    ("AND a", 0, "expected a term"),
    ("title: x", 6, "title: must be followed directly by a term"),
    ("and AND or OR x", 11, "AND and OR at the same level"),
    ("gcap and tempest", 5, 'operators are upper case: write AND (or "and" to search for'),
    ("gcap AND not tempest", 9, "operators are upper case: write NOT"),
]


@pytest.mark.parametrize(("query", "offset", "wording"), SYNTAX_ERRORS)
def test_syntax_errors_point_at_the_offending_token(query: str, offset: int, wording: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse_query(query)
    assert wording in info.value.message
    assert info.value.offset == offset


COMPILE_ERRORS = [
    ("$acronym", "unknown term list '$acronym'; did you mean '$acr'?"),
    ("@country", "unknown list '@country'; did you mean '@countries'?"),
    ("@zzz", "unknown list '@zzz' (lists are defined in rules/lists/<name>.yaml)"),
    ("ra*", "a prefix needs at least 3 characters before the *"),
    ("防衛*", "drop the *"),
    ('"--"', "has no letters or digits"),
    ("(a AND b) NEAR/2 c", "NEAR/ONEAR joins terms"),
    ("feed:(a OR b)", "feed: takes one plain word"),
]


@pytest.mark.parametrize(("query", "wording"), COMPILE_ERRORS)
def test_names_and_terms_are_checked_when_compiling(query: str, wording: str) -> None:
    result = compile_query(query, parse_query(query), terms=_terms(), lists=_lists())
    assert result.node is None
    assert any(wording in e.message for e in result.errors), result.errors


def test_an_acronym_without_case_is_a_warning_not_an_error() -> None:
    result = compile_query("OSA", parse_query("OSA"), terms={}, lists={})
    assert result.node is not None
    assert "looks like an acronym" in result.warnings[0].message


# --- properties ----------------------------------------------------------------------------

WORDS = st.sampled_from(["gcap", "osa", "radar", "ジブチ", "tempest", "フィリピン", "japan"])
TEXTS = st.lists(
    st.sampled_from(["gcap", "OSA", "Osaka", "radars", "ジブチ", "の", "Tempest", " ", ", "]),
    max_size=8,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(a=WORDS, b=WORDS, text=TEXTS)
def test_a_or_b_matches_whenever_a_does(a: str, b: str, text: str) -> None:
    if matches(a, text):
        assert matches(f"{a} OR {b}", text)
        assert matches(f"{b} OR {a}", text)


@settings(max_examples=200, deadline=None)
@given(a=WORDS, text=TEXTS)
def test_a_and_not_a_never_matches(a: str, text: str) -> None:
    assert not matches(f"{a} AND NOT {a}", text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40))
def test_normalisation_offsets_stay_inside_the_original(text: str) -> None:
    norm = normalize(text)
    assert len(norm.starts) == len(norm.text)
    for s, e in zip(norm.starts, norm.ends, strict=True):
        assert 0 <= s < e <= len(text)
    assert list(norm.starts) == sorted(norm.starts)


@given(st.text(alphabet=st.sampled_from(list("ab Z\t\n.-é\u0301ﾊﾟＯ　’e")), max_size=40))
def test_the_ascii_fast_path_agrees_with_character_by_character_normalisation(text: str) -> None:
    from bot.rules import text as text_module

    fast = normalize(text)
    slow_parts = [text_module._fold_chunk(text, True)] if text else []
    # Same output as NFKC + casefold with white space collapsed, and a consistent offset map.
    expected = " ".join("".join(slow_parts).split()) if text.strip() else ""
    assert fast.text.strip(" ") == expected
    assert len(fast.starts) == len(fast.ends) == len(fast.text)
    assert all(0 <= s < e <= len(text) for s, e in zip(fast.starts, fast.ends, strict=True))
    assert list(fast.starts) == sorted(fast.starts)
