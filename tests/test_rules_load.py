"""Loading the rules directory: the Rule values it builds and the errors it reports."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from bot.errors import ConfigError, RuleError
from bot.model import Entry, RuleStatus, Severity
from bot.rules import RuleLoadError, load_rules, run_examples

GOOD_RULE = """\
id: osa-demo
title: OSA demo
description: A rule with every key.
status: test
severity: critical
owner: japan-desk
references: ["https://example.org/osa"]
scope:
  feeds: [mofa, japan]
  fields: [title, summary]
terms:
  osa_long: ["Official Security Assistance", 政府安全保障能力強化支援]
  osa_acronym: [{term: OSA, case: sensitive}]
  uk_acts: ["Online Safety Act", "Official Secrets Act"]
query: ($osa_long OR $osa_acronym) AND @countries
exclude:
  uk_acts: $uk_acts AND NOT $osa_long
track: countries
route:
  slack: ["#japan-defence", C0123ABCD]
  digest: [weekly]
tests:
  match:
    - "OSA radars for the Philippines"
    - {title: "政府安全保障能力強化支援の対象国にジブチ", lang: ja, feed: mofa}
  no_match:
    - {title: "Ofcom's OSA fines", summary: "Online Safety Act in the Philippines"}
  todo_match:
    - "Japan's security aid to Manila"
enabled: true
"""

COUNTRIES = """\
- term: Philippines
  aliases: [フィリピン, Pilipinas, Manila]
- Djibouti
- {term: Djibouti (ja), aliases: [ジブチ]}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    write(directory, "lists/countries.yaml", COUNTRIES)
    return directory


def load_errors(directory: Path) -> list[RuleError]:
    with pytest.raises(RuleLoadError) as info:
        load_rules(directory)
    return info.value.errors


def only_error(directory: Path) -> tuple[str, int | None, int | None, str]:
    errors = load_errors(directory)
    assert len(errors) == 1, "\n".join(map(str, errors))
    err = errors[0]
    assert err.path is not None
    return err.path.name, err.line, err.col, err.message


# --- a good rule -----------------------------------------------------------------------------


def test_a_rule_with_every_key_loads_into_a_rule(rules_dir: Path) -> None:
    path = write(rules_dir, "osa-demo.yaml", GOOD_RULE)
    rs = load_rules(rules_dir)
    rule = rs.get("osa-demo")
    assert rule is not None
    assert rule.title == "OSA demo"
    assert rule.status is RuleStatus.TEST
    assert rule.severity is Severity.CRITICAL
    assert rule.owner == "japan-desk"
    assert rule.enabled
    assert rule.slack_channels == ("#japan-defence", "C0123ABCD")
    assert rule.digests == ("weekly",)
    assert rule.track == "countries"
    assert rule.references == ("https://example.org/osa",)
    assert rule.feeds == ("mofa", "japan")
    assert rule.fields == ("title", "summary")
    assert rule.version == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert rule.path == path
    assert [(e.kind, e.feed) for e in rule.examples] == [
        ("match", None), ("match", "mofa"), ("no_match", None), ("todo_match", None),
    ]


def test_feeds_yaml_and_digests_yaml_are_not_rules(rules_dir: Path) -> None:
    write(rules_dir, "feeds.yaml", "feeds: []\n")
    write(rules_dir, "digests.yaml", "digests: []\n")
    assert load_rules(rules_dir).rules == ()


def test_rules_are_sorted_by_id_and_disabled_ones_are_kept_but_never_match(
    rules_dir: Path,
) -> None:
    write(rules_dir, "b-rule.yaml", "id: b-rule\ntitle: B\nquery: gcap\n")
    write(rules_dir, "a-rule.yaml", "id: a-rule\ntitle: A\nquery: gcap\nenabled: false\n")
    rs = load_rules(rules_dir)
    assert [r.id for r in rs.rules] == ["a-rule", "b-rule"]
    assert rs.get("a-rule") is not None and not rs.get("a-rule").enabled  # type: ignore[union-attr]
    assert rs.match_text("GCAP news") == ["b-rule"]
    assert rs.get("nope") is None


def test_defaults_for_optional_keys(rules_dir: Path) -> None:
    write(rules_dir, "min.yaml", "id: min\ntitle: Minimal\nquery: gcap\n")
    rule = load_rules(rules_dir).get("min")
    assert rule is not None
    assert (rule.status, rule.severity, rule.owner, rule.enabled) == (
        RuleStatus.STABLE, Severity.MEDIUM, None, True,
    )
    assert (rule.slack_channels, rule.digests, rule.track, rule.feeds) == ((), (), None, ())
    assert rule.fields == ("title", "summary", "content", "category")


def test_scope_feeds_accepts_feed_names_and_tags(rules_dir: Path) -> None:
    write(rules_dir, "osa-demo.yaml", GOOD_RULE)
    rs = load_rules(rules_dir)
    entry = Entry(key="k", title="OSA radars for the Philippines")
    assert [m.rule_id for m in rs.match(entry, feed_name="mofa")] == ["osa-demo"]
    assert [m.rule_id for m in rs.match(entry, feed_name="x", feed_tags=["japan"])] == [
        "osa-demo"
    ]
    assert rs.match(entry, feed_name="bbc", feed_tags=["uk"]) == []


def test_scope_fields_limits_where_terms_are_looked_for(rules_dir: Path) -> None:
    write(rules_dir, "osa-demo.yaml", GOOD_RULE)
    rs = load_rules(rules_dir)
    in_content = Entry(key="k", title="News", content="OSA radars for the Philippines")
    assert rs.match(in_content, feed_name="mofa") == []


def test_an_exclusion_suppresses_the_match_entirely(rules_dir: Path) -> None:
    write(rules_dir, "osa-demo.yaml", GOOD_RULE)
    rs = load_rules(rules_dir)
    entry = Entry(key="k", title="OSA in the Philippines", summary="Online Safety Act fines")
    assert rs.match(entry, feed_name="mofa") == []


def test_hits_give_offsets_into_the_original_fields(rules_dir: Path) -> None:
    write(rules_dir, "osa-demo.yaml", GOOD_RULE)
    rs = load_rules(rules_dir)
    entry = Entry(key="k", title="日本のＯＳＡ", summary="対象国はﾌｨﾘﾋﾟﾝ")
    [match] = rs.match(entry, feed_name="mofa")
    assert match.rule_version == rs.rules[0].version
    shown = [(h.field, getattr(entry, h.field)[h.start : h.end], h.term) for h in match.hits]
    assert shown == [("title", "ＯＳＡ", "OSA"), ("summary", "ﾌｨﾘﾋﾟﾝ", "Philippines")]


def test_track_reports_the_canonical_names_of_list_entries_hit(rules_dir: Path) -> None:
    write(rules_dir, "osa-demo.yaml", GOOD_RULE)
    rs = load_rules(rules_dir)
    rule = rs.rules[0]
    entry = Entry(key="k", title="OSA: Manila and ジブチ", summary="Pilipinas")
    [match] = rs.match(entry, feed_name="mofa")
    assert rule.tracked(match.hits) == ("Philippines", "Djibouti (ja)")


def test_run_examples_reports_each_example(rules_dir: Path) -> None:
    write(rules_dir, "osa-demo.yaml", GOOD_RULE)
    results = run_examples(load_rules(rules_dir))
    assert [(r.kind, r.passed, r.failed) for r in results] == [
        ("match", True, False),
        ("match", True, False),
        ("no_match", True, False),
        ("todo_match", False, False),  # a known gap: reported, not failing
    ]
    assert results[0].example.title == "OSA radars for the Philippines"
    assert results[0].rule_id == "osa-demo"
    assert "excluded by uk_acts" in results[2].reason
    assert results[3].reason == (
        "the query did not match: found Philippines; missing ($osa_long OR $osa_acronym)")


def test_a_failing_example_says_why(rules_dir: Path) -> None:
    write(rules_dir, "r.yaml", """\
        id: r
        title: R
        query: gcap
        tests:
          match: ["nothing here"]
          no_match: ["GCAP!"]
          todo_no_match: ["GCAP again"]
        """)
    results = run_examples(load_rules(rules_dir))
    assert [(r.kind, r.failed, r.reason) for r in results] == [
        ("match", True, "the query did not match: none of its terms occur; missing gcap"),
        ("no_match", True, "matched: gcap"),
        ("todo_no_match", False, "matched: gcap"),
    ]
    assert results[1].hits[0].start == 0 and results[1].hits[0].end == 4


def test_warnings_do_not_stop_loading(rules_dir: Path) -> None:
    write(rules_dir, "w.yaml", """\
        id: w
        title: W
        terms:
          unused: [foo]
          acr: [SDF]
        query: $acr AND OSA
        """)
    rs = load_rules(rules_dir)
    messages = [(w.line, w.col, w.message) for w in rs.warnings]
    assert messages == [
        (4, 3, "term list 'unused' is not used by the query or any exclusion"),
        (5, 9, "entry of terms.acr: 'SDF' looks like an acronym; without case: sensitive it "
                "also matches 'sdf' and 'Sdf' — write {term: SDF, case: sensitive}"),
        (6, 17, "query: 'OSA' looks like an acronym: without case:OSA it also matches 'osa'"),
    ]


# --- broken rules: file, line, column and wording ---------------------------------------------

BROKEN = [
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nseverty: high\nquery: gcap\n",
        (3, 1, "unknown key 'severty' in a rule; did you mean 'severity'? (allowed: id, title"),
        id="unknown-key",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: a AND b OR c\n",
        (3, 16, "query: AND and OR at the same level need parentheses: write (a AND b) OR c or "
                "a AND (b OR c)"),
        id="and-or-mixed",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: |\n  gcap AND\n    (tempest fighter)\n",
        (5, 14, 'query: missing operator between tempest and fighter: write "tempest fighter" '
                "for the phrase or tempest AND fighter"),
        id="adjacent-terms-in-block-scalar",
    ),
    pytest.param(
        "osa.yaml", 'id: osa\ntitle: T\nquery: "gcap AND (tempest"\n',
        (3, 26, "query: missing ')' to close the '(' at column 10"),
        id="unclosed-paren-in-quoted-scalar",
    ),
    pytest.param(
        "osa.yaml", 'id: osa\ntitle: T\nquery: "\\u0067cap AND \\"x y\\" z"\n',
        (3, 31, 'query: missing operator between "x y" and z'),
        id="escapes-in-double-quoted-scalar",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: 'it''s AND x y'\n",
        (3, 21, "query: missing operator between x and y"),
        id="quote-doubled-in-single-quoted-scalar",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap AND\n  (x OR\n     y z)\n",
        (5, 8, "query: missing operator between y and z"),
        id="multi-line-plain-scalar",
    ),
    pytest.param(
        "osa.yaml",
        "id: osa\ntitle: T\nterms:\n  osa_long: [x]\nquery: $osa_lng AND y\n",
        (5, 8, "query: unknown term list '$osa_lng'; did you mean '$osa_long'? (term lists are "
               "defined under terms: in this rule)"),
        id="unknown-term-list",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap AND @countrys\n",
        (3, 17, "query: unknown list '@countrys'; did you mean '@countries'? (lists are defined "
                "in rules/lists/<name>.yaml)"),
        id="unknown-list",
    ),
    pytest.param(
        "osa.yaml", "id: OSA_Recipients\ntitle: T\nquery: gcap\n",
        (1, 5, "id 'OSA_Recipients' must be kebab-case (lower-case letters, digits and single "
               "hyphens), e.g. osa-recipients"),
        id="id-not-kebab-case",
    ),
    pytest.param(
        "osa.yaml", "id: gcap\ntitle: T\nquery: gcap\n",
        (1, 5, "id 'gcap' does not match the file name: rename the file to gcap.yaml or set "
               "id: osa"),
        id="id-differs-from-file-name",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nstatus: stabel\nquery: gcap\n",
        (3, 9, "status must be one of experimental, test, stable, deprecated, not 'stabel'; "
               "did you mean 'stable'?"),
        id="bad-status",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap\nseverity: urgent\n",
        (4, 11, "severity must be one of low, medium, high, critical, not 'urgent'"),
        id="bad-severity",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\n",
        (1, 1, "missing required key 'query'"),
        id="missing-query",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: [T\nquery: gcap\n",
        (3, 6, "invalid YAML: expected ',' or ']', but got ':'"),
        id="yaml-syntax",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap\ntitle: U\n",
        (4, 1, "duplicate key 'title' (first given on line 2)"),
        id="duplicate-key",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nterms:\n  s: [radar*, ra*]\nquery: $s\n",
        (4, 15, "entry of terms.s: 'ra*': a prefix needs at least 3 characters before the *"),
        id="short-prefix-in-term-list",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: NOT gcap\n",
        (3, 8, "query matches entries that contain none of its terms (only NOT)"),
        id="only-not",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap\nenabled: 'no'\n",
        (4, 10, "enabled must be true or false"),
        id="enabled-not-boolean",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap\nroute:\n  slack: [japan-defence]\n",
        (5, 11, "route.slack: 'japan-defence' is not a Slack channel; write '#name'"),
        id="bad-slack-channel",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap\ntrack: country\n",
        (4, 8, "track: no list named 'country'; did you mean 'countries'?"),
        id="unknown-track-list",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap\ntests:\n  match:\n    - {titel: GCAP}\n",
        (6, 8, "unknown key 'titel' in tests.match[0]; did you mean 'title'?"),
        id="bad-example-key",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap\ntests:\n  matches: [GCAP]\n",
        (5, 3, "unknown key 'matches' in tests; did you mean 'match'?"),
        id="bad-tests-kind",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nscope:\n  fields: [titel]\nquery: gcap\n",
        (4, 12, "unknown field 'titel' in scope.fields; did you mean 'title'?"),
        id="bad-scope-field",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap\nexclude:\n  x: a OR b AND c\n",
        (5, 13, "exclude.x: OR and AND at the same level need parentheses"),
        id="bad-exclusion",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nterms:\n  t: [{term: OSA, case: upper}]\nquery: $t\n",
        (4, 25, "entry of terms.t case must be one of sensitive, insensitive, not 'upper'"),
        id="bad-case-value",
    ),
    pytest.param(
        "osa.yaml", "", (None, None, "empty rule file; a rule needs at least id, title and query"),
        id="empty-file",
    ),
    pytest.param(
        "osa.yml", "id: osa\n", (None, None, "rename to osa.yaml (only .yaml is read)"),
        id="yml-suffix",
    ),
    pytest.param(
        "lists/bad.yaml", "- Philippines\n- {term: Fiji, alias: [フィジー]}\n",
        (2, 16, "unknown key 'alias' in entry of list 'bad'; did you mean 'aliases'?"),
        id="bad-list-entry",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap AND /fy(20/\n",
        (3, 17, "query: invalid regular expression /fy(20/: missing ): fy(20"),
        id="invalid-regex",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap OR /x*/\n",
        (3, 16, "query: /x*/ matches empty text, so it would match every entry"),
        id="regex-matching-empty-text",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap OR /a(?=b)/\n",
        (3, 16, "query: invalid regular expression /a(?=b)/"),
        id="regex-look-ahead-refused-by-re2",
    ),
    pytest.param(
        "osa.yaml", "id: osa\ntitle: T\nquery: gcap AND /fy20\n",
        (3, 17, "query: unterminated regular expression: add the closing /"),
        id="unterminated-regex",
    ),
    pytest.param(
        "osa.yaml", 'id: osa\ntitle: T\nterms:\n  a: [gcap, "\\ud842\\udf9fる"]\nquery: $a\n',
        (4, 13, "term '\\ud842\\udf9fる' has a lone surrogate: write the character itself "
                "or its \\U escape"),
        id="lone-surrogate-from-a-yaml-escape",
    ),
    pytest.param(
        "lists/bad.yaml", "- Fiji\n- Tonga\n- Fiji\n",
        (3, 3, "'Fiji' is listed twice in list 'bad' (first on line 1)"),
        id="duplicate-list-entry",
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), BROKEN)
def test_a_broken_file_is_reported_with_file_line_and_column(
    rules_dir: Path, name: str, text: str, expected: tuple[int | None, int | None, str]
) -> None:
    write(rules_dir, name, text)
    file_name, line, col, message = only_error(rules_dir)
    assert file_name == Path(name).name
    assert (line, col) == expected[:2], message
    assert expected[2] in message


def test_every_error_in_every_file_is_collected(rules_dir: Path) -> None:
    write(rules_dir, "a.yaml", "id: a\ntitle: A\nsevrity: low\nquery: x y\n")
    write(rules_dir, "b.yaml", "id: b\nquery: gcap AND @nope\n")
    write(rules_dir, "lists/l.yaml", "- {term: X, case: maybe}\n")
    errors = load_errors(rules_dir)
    where = [(e.path.name if e.path else "", e.line, e.col) for e in errors]
    assert where == [
        ("a.yaml", 3, 1), ("a.yaml", 4, 10), ("b.yaml", 1, 1), ("b.yaml", 2, 17),
        ("l.yaml", 1, 19),
    ]


def test_the_load_error_is_a_config_error_whose_text_lists_every_problem(
    rules_dir: Path,
) -> None:
    write(rules_dir, "a.yaml", "id: a\ntitle: A\nquery: x y\nsevrity: low\n")
    with pytest.raises(ConfigError) as info:
        load_rules(rules_dir)
    assert isinstance(info.value, RuleLoadError)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{rules_dir / 'a.yaml'}:3:10: query: missing operator")
    assert lines[1].startswith(f"{rules_dir / 'a.yaml'}:4:1: unknown key 'sevrity'")


def test_a_broken_list_does_not_cascade_into_unknown_list_errors(rules_dir: Path) -> None:
    write(rules_dir, "lists/countries.yaml", "- {term: X, case: maybe}\n")
    write(rules_dir, "r.yaml", "id: r\ntitle: R\nquery: gcap AND @countries\n")
    errors = load_errors(rules_dir)
    assert [e.path.name for e in errors if e.path] == ["countries.yaml"]


def test_a_missing_rules_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuleLoadError, match="rules directory not found"):
        load_rules(tmp_path / "nope")


def test_yaml_booleans_and_numbers_in_term_lists_are_read_as_text(rules_dir: Path) -> None:
    # PyYAML would turn `no` (Norway's ISO code) into False and 1944 into an int.
    write(rules_dir, "lists/codes.yaml", "- no\n- 1944\n")
    write(rules_dir, "r.yaml", "id: r\ntitle: R\nquery: '@codes'\n")
    rs = load_rules(rules_dir)
    assert rs.match_text("The Tempest of 1944") == ["r"]
    assert rs.match_text("yes or no") == ["r"]
