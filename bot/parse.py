"""Feed bytes → normalised :class:`~bot.model.Entry` values. Pure: no I/O, no clock.

``parse_feed`` hands the bytes to feedparser as a stream (given a raw ``str`` or ``bytes``,
feedparser may treat it as a file path or a URL and read it) and turns every item into an
``Entry`` whose text fields are plain text: HTML stripped, ``<script>``/``<style>`` content
dropped, entities decoded, whitespace collapsed, paragraph breaks kept as ``"\\n"``. Text is
*not* NFKC-normalised here; the matcher normalises with an offset map so that hits point into
the text stored here.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import feedparser

from bot.charset import decode_document
from bot.errors import ParseError
from bot.model import Entry

MAX_ENTRIES = 1000
# Which library reads the XML (POLICYBOT_PARSER; issue 7). "feedparser" is the reference;
# "fast" is feedparser-rs (``pip install 'policybot[fast]'``), used for every document it
# reads cleanly, with feedparser for the rest (see parse_feed).
Parser = Literal["feedparser", "fast"]
PARSERS: tuple[Parser, ...] = ("feedparser", "fast")
# A date further ahead than this of the fetch is a typo or a trick (year 2206, "embargoed"):
# it is dropped, so that the item cannot sort first forever nor dodge the backfill rule.
FUTURE_SLACK = timedelta(days=1)
FEED_TYPES = {
    "application/rss+xml": "RSS",
    "application/atom+xml": "Atom",
    "application/rdf+xml": "RDF",
    "application/feed+json": "JSON Feed",
    "application/json": "JSON Feed",
}

__all__ = [
    "MAX_ENTRIES",
    "PARSERS",
    "FeedLink",
    "ParsedFeed",
    "Parser",
    "fast_parser_available",
    "feed_links",
    "html_to_text",
    "normalise_link",
    "parse_feed",
]


@dataclass(frozen=True, slots=True)
class FeedLink:
    """A feed that an HTML page advertises with ``<link rel="alternate" type=…>``."""

    url: str
    kind: str  # RSS | Atom | RDF | JSON Feed
    title: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """One parsed document. ``bozo`` is feedparser's complaint about a feed it could still read
    (bad XML, wrong declared encoding), or None for a clean one."""

    title: str | None
    link: str | None
    language: str | None
    entries: tuple[Entry, ...]
    bozo: str | None = None
    encoding: str = "UTF-8"  # what the bytes were decoded as (bot.charset)
    # Which library read the XML: "fast" (feedparser-rs) or "feedparser". Not part of the
    # value: both read a document to the same entries.
    parsed_by: str = field(default="feedparser", compare=False)


def parse_feed(
    body: bytes,
    *,
    url: str,
    headers: Mapping[str, str] | None = None,
    language: str | None = None,
    max_entries: int = MAX_ENTRIES,
    now: datetime | None = None,
    parser: Parser = "feedparser",
) -> ParsedFeed:
    """Parse an RSS 0.9x/1.0/2.0 or Atom document into entries, in document order.

    ``url`` is the feed's (final) URL: relative links resolve against it (after any
    ``xml:base``). ``headers`` are the HTTP response headers; feedparser reads the charset
    from ``Content-Type``. ``language`` is the fallback when neither the entry (``xml:lang``)
    nor the feed (``<language>``, ``xml:lang``, ``Content-Language``) declares one.

    Rules that keep the result deterministic:

    - ``Entry.key`` is the guid/id as written; else the link, normalised (scheme and host
      lower-cased, default port and fragment dropped); else ``"sha256:"`` + a hash of title
      and date. When several items share a key, the *first* in the document is kept and the
      later ones are dropped.
    - No guid and no link: the key hashes the title and the date; with neither date nor
      title distinct, two such items are one (the first kept).
    - No date: ``published`` and ``updated`` are None; such an item counts as the oldest when
      the cap below applies and, on a feed's first poll, as back catalogue (not alerted).
    - A date more than a day after ``now`` (when given) is dropped, as if the item had none.
    - Relative links resolve against ``xml:base`` and then the feed's final URL; links that
      are not http(s) (``javascript:``) are dropped.
    - The encoding is decided by :func:`bot.charset.decode_document` (BOM, HTTP charset, XML
      declaration, then UTF-8 and the Japanese legacy encodings); a wrong declaration is
      reported in ``bozo``, not fatal.
    - More than ``max_entries`` items: the newest ``max_entries`` by published (else updated)
      date are kept, undated ones counting as oldest; the survivors stay in document order.
    - A valid feed with no items returns zero entries. A document that yields no entries and
      is not a recognisable feed raises :class:`~bot.errors.ParseError` (saying so when it
      looks like an HTML page, and naming the feed the page advertises if it does).

    The feed URL is deliberately *not* passed to feedparser as ``Content-Location``: feedparser
    would then resolve a relative-looking guid ("1234") against it, and the keys of every item
    would change when the feed moves (http → https, a new path), flooding the channel with
    "new" items. Links are resolved here instead.

    ``parser="fast"`` reads the document with feedparser-rs when it is installed and the
    document is one it reads the same way (well-formed, no ``xml:base``, see
    :func:`_fast_parse`); anything else — a document it rejects or finds malformed, or no
    feedparser-rs at all — is read by feedparser, so the entries are the same either way
    (tests/test_parse_fast.py proves it over the team's corpus).
    """
    if not body.strip():
        raise ParseError(url, "empty body: the server answered with no content")
    response_headers = {k.lower(): v for k, v in (headers or {}).items()}
    # Not ours to give feedparser: see the docstring.
    response_headers.pop("content-location", None)
    # feedparser guesses encodings its own way (and never tries the Japanese ones): give it
    # UTF-8 that says so, decoded by the rules of bot.charset.
    decoded = decode_document(body, response_headers)
    media_type = response_headers.get("content-type", "application/xml").split(";")[0].strip()
    utf8_headers = {**response_headers, "content-type": f"{media_type}; charset=utf-8"}
    document = _as_utf8_document(decoded.text)
    data: Any = _fast_parse(document, media_type) if parser == "fast" else None
    parsed_by = "fast" if data is not None else "feedparser"
    if data is None:
        data = feedparser.parse(
            io.BytesIO(document),
            response_headers=utf8_headers,
            resolve_relative_uris=False,  # links inside HTML are dropped with the tags
            # HTML is reduced to text below and every text is escaped on output (Slack,
            # email): feedparser's sanitiser was half of its time and changed nothing we
            # keep (issue 7; tests/test_parse.py's corpus, hostile markup included).
            sanitize_html=False,
        )
    feed: Mapping[str, Any] = _get(data, "feed") or {}
    raw_entries: list[Mapping[str, Any]] = list(_get(data, "entries") or ())
    version: str = _get(data, "version") or ""
    bozo = decoded.note or _bozo_message(data)

    if not raw_entries and not version:
        if _looks_like_html(body, response_headers):
            raise ParseError(url, _html_message(feed_links(decoded.text, url)))
        raise ParseError(url, f"not a feed: {bozo or 'no RSS, RDF or Atom elements found'}")

    feed_language = _language(_get(feed, "language")) or _language(language)
    entries: list[Entry] = []
    seen: set[str] = set()
    for raw in raw_entries:
        entry = _entry(raw, url=url, fallback_language=feed_language, now=now)
        if entry.key in seen:
            continue
        seen.add(entry.key)
        entries.append(entry)

    return ParsedFeed(
        title=_text_field(feed, "title") or None,
        link=_absolute_http_link(_get(feed, "link"), url),
        language=feed_language,
        entries=_newest(entries, max_entries),
        bozo=bozo,
        encoding=decoded.encoding,
        parsed_by=parsed_by,
    )


# -- feedparser-rs -------------------------------------------------------------------------

_feedparser_rs: Any
try:  # the optional extra: pip install 'policybot[fast]'
    import feedparser_rs as _feedparser_rs
except ImportError:  # pragma: no cover - depends on the installation
    _feedparser_rs = None


def fast_parser_available() -> bool:
    return _feedparser_rs is not None


# Documents that feedparser-rs reads as feedparser does, field for field: RSS 2.0 served as
# XML, without the markup the two read differently — xml:base and xml:lang (feedparser
# resolves and inherits them), DTDs (entity expansion), and the dates and people that
# feedparser maps its own way (dc:date, dcterms:modified, atom:updated → updated; RSS
# <author> "email (Name)"). Everything else goes to feedparser; tests/test_parse_fast.py
# holds the two to the same entries over the team's corpus.
_FAST_VERSIONS = frozenset({"rss20"})
_FAST_MEDIA_TYPES = frozenset({"application/xml", "text/xml", "application/rss+xml"})
_FAST_UNSAFE = re.compile(
    rb"xml:base|xml:lang|<!DOCTYPE|<!ENTITY|<(?:[\w-]+:)?(?:updated|modified|date|issued|"
    rb"created|author|published)\b", re.IGNORECASE)


def _fast_parse(document: bytes, media_type: str) -> dict[str, Any] | None:
    """The document read by feedparser-rs, as the plain dicts feedparser returns (only the
    keys this module reads); None when feedparser should read it instead: not installed,
    markup the two read differently, or a document it rejects or finds malformed."""
    if (_feedparser_rs is None or media_type.lower() not in _FAST_MEDIA_TYPES
            or _FAST_UNSAFE.search(document)):
        return None
    # Always bytes: given a str that looks like a URL, feedparser-rs would fetch it.
    assert isinstance(document, bytes)
    try:
        result: Any = _feedparser_rs.parse(
            document, sanitize_html=False, resolve_relative_uris=False)
        if result.bozo or result.version not in _FAST_VERSIONS:
            return None
        return {
            "version": result.version,
            "bozo": False,
            "feed": _fast_feed(result.feed),
            "entries": [_fast_entry(e) for e in result.entries],
        }
    except Exception:  # noqa: BLE001 - any failure of the optional parser: use the reference
        return None


def _fast_text(value: Any) -> Any:
    # feedparser's repair of UTF-8 read as Latin-1 ("Ã©" → "é"), applied to every text it
    # returns from a UTF-8 document (feedparser/mixin.py, pop()).
    if isinstance(value, str):
        try:
            return value.encode("iso-8859-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return value
    return value


def _fast_plain(value: Any) -> dict[str, Any] | None:
    """An RSS text element that is plain text unless it looks like HTML (feedparser's own
    guess, so that both parsers give the same type)."""
    if value is None:
        return None
    text = _fast_text(value.value)
    kind = "text/html" if _looks_like_html_text(text) else "text/plain"
    return {"type": kind, "value": text, "language": None}


def _looks_like_html_text(text: str) -> bool:
    return bool(feedparser.mixin._FeedParserMixin.looks_like_html(text))


def _fast_detail(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"type": value.type, "value": _fast_text(value.value), "language": None}


def _fast_feed(feed: Any) -> dict[str, Any]:
    return {"title": _fast_text(feed.title), "title_detail": _fast_plain(feed.title_detail),
            "link": _fast_text(feed.link), "language": _fast_text(feed.language)}


def _fast_entry(entry: Any) -> dict[str, Any]:
    author = entry.author_detail
    return {
        "id": _fast_text(entry.id),
        "title": _fast_text(entry.title),
        "title_detail": _fast_plain(entry.title_detail),
        "summary": _fast_text(entry.summary),
        "summary_detail": _fast_detail(entry.summary_detail),
        "content": [_fast_detail(c) for c in entry.content or ()],
        "link": _fast_text(entry.link),
        "published_parsed": entry.published_parsed,
        "updated_parsed": None,  # RSS 2.0 has only pubDate; see _FAST_UNSAFE
        "author": _fast_text(entry.author),
        "author_detail": {"name": _fast_text(author.name)} if author is not None else None,
        "tags": [{"term": _fast_text(t.term)} for t in entry.tags or ()],
    }


_DECLARATION = re.compile(r"""^(\s*<\?xml[^>]*?encoding\s*=\s*)(["'])[^"']*\2""")


def _as_utf8_document(text: str) -> bytes:
    """The document as UTF-8 bytes whose XML declaration (if any) says UTF-8."""
    return _DECLARATION.sub(r"\1\2utf-8\2", text.lstrip("\ufeff"), count=1).encode("utf-8")


def _html_message(links: tuple[FeedLink, ...]) -> str:
    if not links:
        return ("not a feed: looks like an HTML page, and it advertises no feed; find the "
                "site's RSS or Atom link and use that URL")
    more = (f" (and {len(links) - 1} more: `policybot feeds discover` lists them)"
            if len(links) > 1 else "")
    return (f"not a feed: looks like an HTML page; its {links[0].kind} feed is "
            f"{links[0].url}{more}: use that URL")


def _entry(raw: Mapping[str, Any], *, url: str, fallback_language: str | None,
           now: datetime | None = None) -> Entry:
    title = _text_field(raw, "title")
    summary = _text_field(raw, "summary")
    content = _content(raw)
    link = _absolute_http_link(_get(raw, "link"), url)
    published = _not_future(_datetime(_get(raw, "published_parsed")), now)
    updated = _not_future(_datetime(_get(raw, "updated_parsed")), now)
    return Entry(
        key=_key(raw, link, title, published or updated),
        title=title,
        link=link,
        author=_author(raw),
        categories=_categories(raw),
        summary=summary,
        content=content,
        published=published,
        updated=updated,
        language=_entry_language(raw) or fallback_language,
        content_hash=content_hash(title, link, summary, content),
    )


def content_hash(title: str, link: str | None, summary: str, content: str) -> str:
    """SHA-256 over what a reader sees; never over fields that change on every fetch."""
    parts = (title, link or "", summary, content)
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _key(raw: Mapping[str, Any], link: str | None, title: str, when: datetime | None) -> str:
    guid = _get(raw, "id")
    if isinstance(guid, str) and guid.strip():
        return guid.strip()
    if link:
        return normalise_link(link)
    stamp = when.isoformat() if when else ""
    digest = hashlib.sha256(f"{title}\x1f{stamp}".encode()).hexdigest()
    return f"sha256:{digest}"


def normalise_link(link: str) -> str:
    """Scheme and host lower-cased, default port and fragment dropped; path and query kept."""
    parts = urlsplit(link)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None and (scheme, port) not in {("http", 80), ("https", 443)}:
        host = f"{host}:{port}"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}" if userinfo else host
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _absolute_http_link(value: object, base: str) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        absolute = urljoin(base, value.strip())
        parts = urlsplit(absolute)
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return None
    return absolute


def _author(raw: Mapping[str, Any]) -> str | None:
    detail = _get(raw, "author_detail")
    name = _get(detail, "name") if isinstance(detail, Mapping) else None
    value = name or _get(raw, "author")
    # Already plain text from feedparser: stripping tags here would eat "Jane <jane@…>".
    if not isinstance(value, str):
        return None
    return _collapse(value) or None


def _categories(raw: Mapping[str, Any]) -> tuple[str, ...]:
    terms: list[str] = []
    for tag in _get(raw, "tags") or ():
        term = _get(tag, "term") if isinstance(tag, Mapping) else None
        if isinstance(term, str):
            text = _collapse(term)
            if text and text not in terms:
                terms.append(text)
    return tuple(terms)


def _text_field(raw: Mapping[str, Any], name: str) -> str:
    value = _get(raw, name)
    if not isinstance(value, str):
        return ""
    detail = _get(raw, f"{name}_detail")
    kind = _get(detail, "type") if isinstance(detail, Mapping) else None
    return _to_text(value, kind if isinstance(kind, str) else "text/html")


def _content(raw: Mapping[str, Any]) -> str:
    texts: list[str] = []
    for part in _get(raw, "content") or ():
        if not isinstance(part, Mapping):
            continue
        value = _get(part, "value")
        kind = _get(part, "type")
        if isinstance(value, str):
            text = _to_text(value, kind if isinstance(kind, str) else "text/html")
            if text and text not in texts:
                texts.append(text)
    return "\n".join(texts)


def _to_text(value: str, kind: str) -> str:
    if kind == "text/plain":
        return _collapse_lines(value)
    return html_to_text(value)


def _entry_language(raw: Mapping[str, Any]) -> str | None:
    # feedparser records xml:lang per element; the entry's own elements carry the language
    # in effect there (the entry's xml:lang, else the feed's).
    details: list[object] = [_get(raw, "title_detail"), _get(raw, "summary_detail")]
    details.extend(_get(raw, "content") or ())
    for detail in details:
        if isinstance(detail, Mapping):
            found = _language(_get(detail, "language"))
            if found:
                return found
    return None


def _language(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return value.strip().replace("_", "-") or None


def _datetime(value: object) -> datetime | None:
    # feedparser's *_parsed values are time.struct_time in UTC.
    if not isinstance(value, time.struct_time):
        return None
    try:
        return datetime(*value[:6], tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def _not_future(when: datetime | None, now: datetime | None) -> datetime | None:
    if when is None or now is None or when <= now + FUTURE_SLACK:
        return when
    return None


def _newest(entries: list[Entry], limit: int) -> tuple[Entry, ...]:
    if len(entries) <= limit:
        return tuple(entries)
    oldest = datetime.min.replace(tzinfo=UTC)
    order = sorted(
        range(len(entries)),
        key=lambda i: entries[i].published or entries[i].updated or oldest,
        reverse=True,
    )
    keep = sorted(order[:limit])
    return tuple(entries[i] for i in keep)


def _bozo_message(data: Mapping[str, Any]) -> str | None:
    if not _get(data, "bozo"):
        return None
    exc = _get(data, "bozo_exception")
    return str(exc) if exc is not None else "malformed feed"


_HTML_START = re.compile(
    rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)\b",
    re.IGNORECASE | re.DOTALL,
)


def _looks_like_html(body: bytes, headers: Mapping[str, str]) -> bool:
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    head = body[:4096].lstrip(b"\xef\xbb\xbf")
    return content_type in {"text/html", "application/xhtml+xml"} or bool(_HTML_START.match(head))


def _get(mapping: object, key: str) -> Any:
    # dict.get, not FeedParserDict's []: that maps old names and warns (DeprecationWarning
    # for "updated" → "published"), and the pytest config turns warnings into errors.
    if isinstance(mapping, dict):
        return dict.get(mapping, key)
    return None


# -- feeds advertised by an HTML page -------------------------------------------------------


class _LinkFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.found: list[tuple[str, str, str | None]] = []  # href, type, title

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "base" and self.base is None and values.get("href"):
            self.base = values["href"]
        if tag not in ("link", "a"):
            return
        rels = values.get("rel", "").lower().split()
        kind = values.get("type", "").split(";")[0].strip().lower()
        if "alternate" in rels and kind in FEED_TYPES and values.get("href"):
            self.found.append((values["href"], kind, values.get("title") or None))

    handle_startendtag = handle_starttag


def feed_links(html: str, base_url: str) -> tuple[FeedLink, ...]:
    """The feeds an HTML page advertises (``<link rel="alternate" type="application/rss+xml"
    href=…>``, also Atom, RDF and JSON Feed), in page order, resolved against ``<base>`` and
    the page URL; http(s) only, each URL once."""
    finder = _LinkFinder()
    finder.feed(html[:2_000_000])
    finder.close()
    base = urljoin(base_url, finder.base) if finder.base else base_url
    links: dict[str, FeedLink] = {}
    for href, kind, title in finder.found:
        absolute = _absolute_http_link(href, base)
        if absolute and absolute not in links:
            title_text = _collapse(title) if title else None
            links[absolute] = FeedLink(absolute, FEED_TYPES[kind], title_text or None)
    return tuple(links.values())


# -- HTML → plain text --------------------------------------------------------------------

# Elements whose text is never shown to a reader.
_SKIP = frozenset({"script", "style", "template"})
# Elements that start a new line or paragraph.
_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "div", "dl", "dt",
    "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "li", "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
})
_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than newline


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip_depth += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            # Newlines inside running text are layout, not paragraph breaks.
            self.parts.append(data.replace("\r", " ").replace("\n", " "))


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment: tags stripped, script/style dropped, entities decoded,
    whitespace collapsed, one ``"\\n"`` between blocks (paragraphs, list items, ``<br>``)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return _collapse_lines("".join(parser.parts))


def _collapse_lines(text: str) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n"))
    return "\n".join(line for line in lines if line)


def _collapse(text: str) -> str:
    return " ".join(text.split())
