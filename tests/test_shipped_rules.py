"""The rules, lists and demo feeds that ship with policybot."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import yaml

from bot.model import Entry, RuleStatus
from bot.rules import RuleSet, load_rules, run_examples
from bot.rules.text import has_unspaced

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
DEMO_DIR = ROOT / "bot" / "demo"
SHIPPED = ("asset-protection", "gcap", "osa-recipients", "reshuffles")
ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture(scope="module")
def shipped() -> RuleSet:
    return load_rules(RULES_DIR)


def test_the_shipped_rules_load_without_errors_or_warnings(shipped: RuleSet) -> None:
    assert {r.id for r in shipped.rules} >= set(SHIPPED)
    assert [str(w) for w in shipped.warnings] == []


def test_every_shipped_example_passes(shipped: RuleSet) -> None:
    failures = [
        f"{r.rule_id} {r.kind} (line {r.line}): {r.example.title!r}: {r.reason}"
        for r in run_examples(shipped)
        if r.failed
    ]
    assert failures == []


@pytest.mark.parametrize("rule_id", SHIPPED)
def test_each_shipped_rule_is_stable_routed_by_default_and_well_tested(
    shipped: RuleSet, rule_id: str
) -> None:
    rule = shipped.get(rule_id)
    assert rule is not None
    assert rule.status is RuleStatus.STABLE
    assert rule.enabled
    assert rule.slack_channels == ()  # the default channel
    assert rule.description and rule.owner
    for kind in ("match", "no_match"):
        examples = [e.entry for e in rule.examples if e.kind == kind]
        assert len(examples) >= 10, kind
        japanese = [e for e in examples if has_unspaced(e.title + e.summary + e.content)]
        assert len(japanese) >= 3, f"{kind}: needs Japanese examples"
        assert len(examples) - len(japanese) >= 5, f"{kind}: needs English examples"


def test_osa_tracks_recipient_countries_by_their_english_names(shipped: RuleSet) -> None:
    rule = shipped.get("osa-recipients")
    assert rule is not None
    entry = Entry(key="k", title="政府、OSAでジブチとﾓﾝｺﾞﾙに沿岸レーダーを供与")
    match = rule.match(entry, feed_name="jp-mod-news")
    assert match is not None
    assert rule.tracked(match.hits) == ("Djibouti", "Mongolia")


def test_reshuffles_track_the_uk_post_not_the_japanese_one_inside_it(shipped: RuleSet) -> None:
    rule = shipped.get("reshuffles")
    assert rule is not None
    match = rule.match(Entry(key="k", title="英外務大臣が辞任"), feed_name="nhk")
    assert match is not None
    assert rule.tracked(match.hits) == ("Foreign Secretary",)


# --- demo feeds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoItem:
    feed: str
    entry: Entry
    guid: str
    link: str
    date: datetime


def _text(node: ET.Element | None) -> str:
    return " ".join((node.text or "").split()) if node is not None else ""


def demo_items() -> Iterator[DemoItem]:
    atom = ET.parse(DEMO_DIR / "uk-gov.atom").getroot()
    for e in atom.iter(f"{ATOM}entry"):
        guid = _text(e.find(f"{ATOM}id"))
        link = e.find(f"{ATOM}link")
        yield DemoItem(
            "demo-uk-gov",
            Entry(key=guid, title=_text(e.find(f"{ATOM}title")),
                  summary=_text(e.find(f"{ATOM}summary")), language="en"),
            guid,
            link.get("href", "") if link is not None else "",
            datetime.fromisoformat(_text(e.find(f"{ATOM}updated"))),
        )
    for name, file, lang in (("demo-jp-mod", "jp-mod.xml", "ja"),
                             ("demo-defence-news", "defence-news.xml", "en")):
        for item in ET.parse(DEMO_DIR / file).getroot().iter("item"):
            guid = _text(item.find("guid"))
            yield DemoItem(
                name,
                Entry(key=guid, title=_text(item.find("title")),
                      summary=_text(item.find("description")), language=lang),
                guid,
                _text(item.find("link")),
                parsedate_to_datetime(_text(item.find("pubDate"))),
            )


# Every demo item with the rules it must match (and no others); an empty set is noise.
EXPECTED: dict[str, set[str]] = {
    "https://example.org/demo/uk-gov/sdf-asset-protection-royal-navy": {"asset-protection"},
    "https://example.org/demo/uk-gov/gigo-treaty-ratified": {"gcap"},
    "https://example.org/demo/uk-gov/ministerial-appointments-november-2026": {"reshuffles"},
    "https://example.org/demo/uk-gov/uk-japan-philippines-maritime-security": {"osa-recipients"},
    "https://example.org/demo/uk-gov/official-secrets-act-guidance": set(),
    "https://example.org/demo/uk-gov/online-safety-act-codes": set(),
    "demo-jp-mod-2026-11-27a": {"asset-protection"},
    "demo-jp-mod-2026-11-24a": {"gcap"},
    "demo-jp-mod-2026-11-19a": {"osa-recipients"},
    "demo-jp-mod-2026-11-11a": {"reshuffles"},
    "demo-jp-mod-2026-11-06a": set(),
    "demo-jp-mod-2026-11-02a": set(),
    "https://example.org/demo/defence-news/edgewing-gcap-mock-up": {"gcap"},
    "https://example.org/demo/defence-news/jmsdf-asset-protection-frigate": {"asset-protection"},
    "https://example.org/demo/defence-news/osa-djibouti-mongolia": {"osa-recipients"},
    "https://example.org/demo/defence-news/tokyo-cabinet-reshuffle": {"reshuffles"},
    "https://example.org/demo/defence-news/sport-arsenal-reshuffle": set(),
    "https://example.org/demo/defence-news/asset-protection-trusts": set(),
    "https://example.org/demo/defence-news/osa-conviction": set(),
    "https://example.org/demo/defence-news/storm-tempest": set(),
}


def test_demo_items_match_exactly_the_expected_rules(shipped: RuleSet) -> None:
    items = list(demo_items())
    assert sorted(i.guid for i in items) == sorted(EXPECTED)
    got = {
        i.guid: {m.rule_id for m in shipped.match(i.entry, feed_name=i.feed, feed_tags=["demo"])}
        for i in items
    }
    assert got == EXPECTED


def test_every_shipped_rule_matches_a_demo_item_and_noise_exists_for_each_confusable() -> None:
    assert set().union(*EXPECTED.values()) == set(SHIPPED)
    noise = [guid for guid, rules in EXPECTED.items() if not rules]
    assert any("reshuffle" in g for g in noise)  # football
    assert any("secrets" in g or "osa-conviction" in g for g in noise)  # Official Secrets Act
    assert any("asset-protection-trusts" in g for g in noise)  # wealth management


def test_demo_items_are_complete_and_dated_november_2026() -> None:
    items = list(demo_items())
    assert len({i.feed for i in items}) == 3
    for feed in {i.feed for i in items}:
        assert 5 <= len([i for i in items if i.feed == feed]) <= 8
    for item in items:
        assert item.guid and item.entry.title and item.entry.summary
        assert item.link.startswith("https://example.org/demo/")
        when = item.date.astimezone(UTC)
        assert (when.year, when.month) == (2026, 11), item.guid


def test_the_demo_feeds_file_lists_the_three_sample_feeds() -> None:
    data = yaml.safe_load((DEMO_DIR / "feeds.yaml").read_text(encoding="utf-8"))
    feeds = {f["name"]: f for f in data["feeds"]}
    assert set(feeds) == {"demo-uk-gov", "demo-jp-mod", "demo-defence-news"}
    for feed in feeds.values():
        assert set(feed) == {"name", "url", "language", "tags", "interval"}
        assert feed["url"].startswith("{base}/")
        assert (DEMO_DIR / feed["url"].removeprefix("{base}/")).is_file()
