"""bot.parse: feed bytes → Entry values. Pure; no server needed."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from feedserver import Item, atom, make_items, rss

from bot.errors import ParseError
from bot.parse import ParsedFeed, html_to_text, normalise_link, parse_feed

FEEDS = Path(__file__).parent / "data" / "feeds"
URL = "https://example.org/feeds/news.xml"


def parse(body: bytes, **kwargs: object) -> ParsedFeed:
    return parse_feed(body, url=kwargs.pop("url", URL), **kwargs)  # type: ignore[arg-type]


# -- the corpus: each file carries its expectations in its first comment -------------------


def _expectations(
    path: Path,
) -> tuple[dict[str, str], list[str], str | None, datetime | None]:
    """The file's first comment: ``Headers:``, ``Expect:`` (Python expressions over ``feed``),
    ``Expect-Error:`` (the ParseError message) and ``Now:`` (the parse time). Comments in
    files whose declared encoding is a lie are ASCII (with \\u escapes in expectations)."""
    raw = path.read_bytes()
    if raw.startswith(b"\xff\xfe"):
        text = raw[2:].decode("utf-16-le")
    else:
        declared = re.search(rb'encoding="([^"]+)"', raw[:100])
        text = raw.decode(declared.group(1).decode() if declared else "utf-8", errors="replace")
    comment = text.split("<!--", 1)[1].split("-->", 1)[0]
    headers: dict[str, str] = {}
    expects: list[str] = []
    error = now = None
    for line in comment.splitlines():
        name, _, value = line.strip().partition(": ")
        if name == "Headers":
            key, _, val = value.partition(": ")
            headers[key] = val
        elif name == "Expect":
            expects.append(value)
        elif name == "Expect-Error":
            error = value
        elif name == "Now":
            now = datetime.fromisoformat(value)
    assert expects or error, f"{path.name} states no expectation"
    return headers, expects, error, now


@pytest.mark.parametrize("path", sorted(FEEDS.iterdir()), ids=lambda p: p.name)
def test_each_sample_feed_parses_as_its_comment_says(path: Path) -> None:
    headers, expects, error, now = _expectations(path)
    url = f"https://example.org/feeds/{path.name}"
    if error is not None:
        with pytest.raises(ParseError) as caught:
            parse_feed(path.read_bytes(), url=url, headers=headers, now=now)
        assert caught.value.url == url
        assert caught.value.message == error
        return
    feed = parse_feed(path.read_bytes(), url=url, headers=headers, now=now)
    for expect in expects:
        assert eval(expect, {"feed": feed, "datetime": datetime, "UTC": UTC}), (expect, feed)


# -- text ---------------------------------------------------------------------------------


def test_html_is_stripped_and_entities_decoded() -> None:
    html = "<p>Tom &amp; Jerry &lt;3 &eacute;t&eacute; &#x2014; ok</p>"
    feed = parse(rss([Item("t", guid="1", description=html)]))
    (entry,) = feed.entries
    assert entry.summary == "Tom & Jerry <3 été — ok"


def test_script_and_style_content_is_dropped() -> None:
    html = "<style>p { color: red }</style><p>Visible</p><script>alert('x')</script> text"
    assert html_to_text(html) == "Visible\ntext"


def test_paragraph_breaks_are_kept_and_other_whitespace_collapsed() -> None:
    html = "<p>One\n  two</p>\n\n<p>three<br>four</p><ul><li>five</li><li>six</li></ul>"
    assert html_to_text(html) == "One two\nthree\nfour\nfive\nsix"


def test_plain_text_title_is_not_parsed_as_html() -> None:
    feed = parse(rss([Item("Budget < 2% of GDP", guid="1")]))
    assert feed.entries[0].title == "Budget < 2% of GDP"


def test_text_is_kept_as_written_not_nfkc_normalised() -> None:
    feed = parse(rss([Item("ＯＳＡ ｶﾀｶﾅ", guid="1")]))
    assert feed.entries[0].title == "ＯＳＡ ｶﾀｶﾅ"


def test_content_encoded_is_read_as_content() -> None:
    feed = parse(rss([Item("t", guid="1", description="short", content="<p>long <i>body</i></p>")]))
    assert (feed.entries[0].summary, feed.entries[0].content) == ("short", "long body")


# -- links and keys -----------------------------------------------------------------------


def test_relative_link_resolves_against_the_feed_url() -> None:
    feed = parse(rss([Item("t", link="../news/1")]), url="https://example.org/feeds/a.xml")
    assert feed.entries[0].link == "https://example.org/news/1"


def test_non_http_links_are_dropped() -> None:
    feed = parse(rss([Item("t", guid="1", link="javascript:alert(1)")]))
    assert feed.entries[0].link is None


def test_key_is_the_guid_as_written_even_when_it_looks_relative() -> None:
    feed = parse(rss([Item("t", guid="1234", guid_is_permalink=True)]))
    # Not resolved against the feed URL: the key must survive the feed moving.
    assert feed.entries[0].key == "1234"
    moved = parse(rss([Item("t", guid="1234", guid_is_permalink=True)]), url="https://new.example/")
    assert moved.entries[0].key == "1234"


def test_without_guid_the_key_is_the_normalised_link() -> None:
    feed = parse(rss([Item("t", link="HTTPS://Example.ORG:443/News/1?a=b#section")]))
    assert feed.entries[0].key == "https://example.org/News/1?a=b"


def test_without_guid_or_link_the_key_is_a_hash_of_title_and_date() -> None:
    when = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    first = parse(rss([Item("Statement", published=when)])).entries[0]
    again = parse(rss([Item("Statement", published=when, description="edited")])).entries[0]
    later = parse(rss([Item("Statement", published=when.replace(hour=11))])).entries[0]
    assert first.key.startswith("sha256:")
    assert first.key == again.key
    assert first.key != later.key


def test_normalise_link_keeps_path_and_query_and_drops_default_port() -> None:
    assert normalise_link("HTTP://A.example:80/X?y=Z#f") == "http://a.example/X?y=Z"
    assert normalise_link("https://a.example:8443") == "https://a.example:8443/"


def test_duplicate_guids_keep_the_first_occurrence() -> None:
    items = [Item("first", guid="dup"), Item("other", guid="x"), Item("second", guid="dup")]
    feed = parse(rss(items))
    assert [(e.key, e.title) for e in feed.entries] == [("dup", "first"), ("x", "other")]


# -- dates, language, hash ----------------------------------------------------------------


def test_dates_are_timezone_aware_utc() -> None:
    body = rss([Item("t", guid="1")]).replace(
        b"</guid>", b"</guid><pubDate>Wed, 25 Nov 2026 10:00:00 +0900</pubDate>"
    )
    published = parse(body).entries[0].published
    assert published == datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    assert published is not None and published.utcoffset() is not None


def test_an_unparseable_date_is_none() -> None:
    body = rss([Item("t", guid="1")]).replace(b"</guid>", b"</guid><pubDate>soon</pubDate>")
    assert parse(body).entries[0].published is None


def test_language_is_the_entrys_then_the_feeds_then_the_argument() -> None:
    doc = atom([Item("a", guid="1", language="ja"), Item("b", guid="2")], language="en-GB")
    assert [e.language for e in parse(doc).entries] == ["ja", "en-GB"]
    undeclared = rss([Item("c", guid="3")], language=None)
    assert parse(undeclared, language="fr").entries[0].language == "fr"
    assert parse(undeclared).entries[0].language is None


def test_content_hash_covers_what_a_reader_sees_and_not_dates() -> None:
    when = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    base = parse(rss([Item("t", guid="1", description="d", published=when)])).entries[0]
    redated = parse(rss([Item("t", guid="1", description="d", published=when.replace(hour=3))]))
    retitled = parse(rss([Item("t2", guid="1", description="d", published=when)]))
    assert len(base.content_hash) == 64
    assert redated.entries[0].content_hash == base.content_hash
    assert retitled.entries[0].content_hash != base.content_hash


def test_categories_and_author_are_read() -> None:
    feed = parse(atom([Item("t", guid="1", author="Jane Doe", categories=("a", "b", "a"))]))
    assert feed.entries[0].author == "Jane Doe"
    assert feed.entries[0].categories == ("a", "b")


def test_entries_over_the_cap_keep_the_newest() -> None:
    items = make_items(10)  # Item 0 is the newest
    shuffled = items[5:] + items[:5]
    feed = parse(rss(shuffled), max_entries=3)
    assert [e.title for e in feed.entries] == ["Item 0", "Item 1", "Item 2"]


# -- errors and odd documents -------------------------------------------------------------


def test_an_html_page_is_a_parse_error_that_says_so() -> None:
    page = b"<!DOCTYPE html><html><head><title>Home</title></head><body><p>Hi</p></body></html>"
    with pytest.raises(ParseError, match="looks like an HTML page") as caught:
        parse(page)
    assert caught.value.url == URL


def test_a_document_that_is_not_xml_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="not a feed"):
        parse(b"just some text\n")


def test_an_empty_body_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="empty body"):
        parse(b"  \n")


def test_a_body_that_looks_like_a_path_is_never_read_as_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "feed.xml"
    secret.write_bytes(rss([Item("from disk", guid="1")]))
    with pytest.raises(ParseError):
        parse(str(secret).encode())


def test_a_valid_feed_without_items_has_zero_entries() -> None:
    assert parse(rss([])).entries == ()
    assert parse(atom([])).entries == ()


def test_a_bozo_feed_that_still_yields_entries_is_kept() -> None:
    body = rss([Item("ok", guid="1")]).replace(b"<title>ok</title>", b"<title>A & B</title>")
    feed = parse(body)
    assert feed.bozo is not None
    assert [e.title for e in feed.entries] == ["A & B"]


def test_shift_jis_is_decoded_with_a_charset_in_the_content_type() -> None:
    body = rss([Item("防衛省の発表", guid="1")], encoding="shift_jis", language="ja")
    feed = parse(body, headers={"Content-Type": "application/rss+xml; charset=Shift_JIS"})
    assert feed.entries[0].title == "防衛省の発表"


def test_parse_imports_nothing_from_the_io_layers() -> None:
    source = Path(__file__).parent.parent / "bot" / "parse.py"
    tree = ast.parse(source.read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
         for alias in node.names}
    forbidden = {"bot.fetch", "bot.store", "bot.notify", "bot.cli", "bot.scheduler", "httpx"}
    assert not {m for m in imported if any(m.startswith(f) for f in forbidden)}
