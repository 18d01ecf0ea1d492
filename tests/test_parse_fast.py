"""The fast parser backend (POLICYBOT_PARSER=fast, feedparser-rs) against the reference.

A differential test (issue 7): every document of the team's corpus — tests/data/feeds/, the
benchmark's generated EN/JA feeds (some Shift_JIS), and generated items with markup,
entities, odd links and authors — must give the same ``ParsedFeed`` through both backends
(or the same ParseError). The fast backend is kept only while this holds; documents it reads
differently are sent to feedparser by ``bot.parse`` and must still come out the same.
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from feedserver import Item, atom, make_items, rss
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_parse import FEEDS, _expectations

from bot.errors import ParseError
from bot.parse import ParsedFeed, fast_parser_available, parse_feed

pytestmark = pytest.mark.skipif(
    not fast_parser_available(), reason="feedparser-rs not installed: pip install '.[fast]'")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from corpus import feed_document  # noqa: E402

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def both(body: bytes, *, url: str = "https://example.org/feeds/a.xml",
         headers: dict[str, str] | None = None,
         now: datetime | None = NOW) -> tuple[ParsedFeed | str, ParsedFeed | str]:
    """The reference's result and the fast backend's: a ParsedFeed, or the error message."""
    out: list[ParsedFeed | str] = []
    for parser in ("feedparser", "fast"):
        try:
            out.append(parse_feed(body, url=url, headers=headers, now=now,
                                  parser=parser))  # type: ignore[arg-type]
        except ParseError as exc:
            out.append(f"ParseError: {exc.message}")
    return out[0], out[1]


def parsed_by(result: ParsedFeed | str) -> str:
    return result.parsed_by if isinstance(result, ParsedFeed) else "error"


@pytest.mark.parametrize("path", sorted(FEEDS.iterdir()), ids=lambda p: p.name)
def test_each_sample_feed_gives_the_same_entries_with_both_parsers(path: Path) -> None:
    headers, _, _, now = _expectations(path)
    reference, fast = both(path.read_bytes(), url=f"https://example.org/feeds/{path.name}",
                           headers=headers, now=now)
    assert fast == reference


def test_the_fast_parser_reads_most_of_the_sample_feeds_itself() -> None:
    """Not a vacuous comparison: the plain RSS 2.0 samples (encodings, markup, duplicates,
    relative links) go through feedparser-rs; Atom, RDF, xml:base, DTDs, HTML pages and
    broken XML go to feedparser."""
    used = {}
    for path in sorted(FEEDS.iterdir()):
        headers, _, _, now = _expectations(path)
        _, fast = both(path.read_bytes(), headers=headers, now=now)
        used[path.name] = parsed_by(fast)
    assert used["rss20.xml"] == used["shift_jis.xml"] == used["markup_in_text.xml"] == "fast"
    assert used["atom.xml"] == used["rdf.xml"] == used["truncated.xml"] == "feedparser"
    assert used["entities_xxe.xml"] == "feedparser"
    assert sum(1 for v in used.values() if v == "fast") >= 12


@pytest.mark.parametrize("n", range(24))
def test_the_benchmark_corpus_gives_the_same_entries_with_both_parsers(n: int) -> None:
    body, _language = feed_document(n, 15 + n, random.Random(n), now=NOW)
    reference, fast = both(body, headers={"Content-Type": "application/rss+xml"})
    assert isinstance(reference, ParsedFeed) and len(reference.entries) == 15 + n
    assert parsed_by(fast) == "fast"
    assert fast == reference


def test_generated_rss_and_atom_give_the_same_entries() -> None:
    items = [
        *make_items(5),
        Item("Budget &lt; 2% &amp; rising", guid="e1", description="Tom &amp; Jerry"),
        Item("<b>Bold</b> title", guid="e2", description="<p>One<br>two</p><script>x</script>"),
        Item("Relative", link="../news/7", description="no guid"),
        Item("Script link", guid="e3", link="javascript:alert(1)"),
        Item("Jane's item", guid="e4", author="Jane Doe", categories=("a", "b", "a")),
        Item("Content", guid="e5", description="short", content="<p>long <i>body</i></p>"),
        Item("防衛省の発表 ＯＳＡ ｶﾀｶﾅ", guid="e6", description="<p>日本語の本文</p>"),
        Item("Mojibake Ã© here", guid="e7"),
        Item("Future", guid="e8", published=NOW + timedelta(days=400)),
        Item("No guid no link", published=NOW - timedelta(hours=3)),
    ]
    for document in (rss(items), rss(items, encoding="shift_jis", language="ja"),
                     rss(items, language=None), atom(items)):
        reference, fast = both(document)
        assert fast == reference


_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufeff"),
    max_size=60)
_html = st.lists(st.sampled_from([
    "<p>", "</p>", "<b>", "</b>", "<br>", "<script>", "</script>", "&amp;", "&lt;", "&gt;",
    "&eacute;", "&#x2014;", "&nbsp;", " ", "\n", "text", "防衛", "OSA", "<a href='x'>", "</a>",
    "<!-- c -->", "&", "<", ">", "]]>",
]), max_size=12).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(titles=st.lists(st.tuples(_text | _html, _html | _text), min_size=1, max_size=4))
def test_any_titles_and_descriptions_give_the_same_entries(
    titles: list[tuple[str, str]],
) -> None:
    items = [Item(title, guid=f"g{i}", description=description,
                  published=NOW - timedelta(hours=i))
             for i, (title, description) in enumerate(titles)]
    reference, fast = both(rss(items))
    assert fast == reference


def test_a_document_the_fast_parser_rejects_is_read_by_feedparser() -> None:
    broken = rss(make_items(3)).replace(b"</channel></rss>", b"")  # truncated XML
    reference, fast = both(broken)
    assert parsed_by(fast) == "feedparser"
    assert fast == reference


def test_a_body_that_is_a_url_is_never_fetched_by_the_fast_parser() -> None:
    # feedparser-rs fetches a *string* that looks like a URL; bot.parse only gives it bytes,
    # and a body that is not a feed is an error, not a request.
    reference, fast = both(b"http://127.0.0.1:9/feed.xml")
    assert fast == reference
    assert isinstance(fast, str) and fast.startswith("ParseError")
