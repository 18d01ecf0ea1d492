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
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import feedparser

from bot.errors import ParseError
from bot.model import Entry

MAX_ENTRIES = 1000

__all__ = ["MAX_ENTRIES", "ParsedFeed", "html_to_text", "normalise_link", "parse_feed"]


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """One parsed document. ``bozo`` is feedparser's complaint about a feed it could still read
    (bad XML, wrong declared encoding), or None for a clean one."""

    title: str | None
    link: str | None
    language: str | None
    entries: tuple[Entry, ...]
    bozo: str | None = None


def parse_feed(
    body: bytes,
    *,
    url: str,
    headers: Mapping[str, str] | None = None,
    language: str | None = None,
    max_entries: int = MAX_ENTRIES,
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
    - More than ``max_entries`` items: the newest ``max_entries`` by published (else updated)
      date are kept, undated ones counting as oldest; the survivors stay in document order.
    - A valid feed with no items returns zero entries. A document that yields no entries and
      is not a recognisable feed raises :class:`~bot.errors.ParseError` (saying so when it
      looks like an HTML page).

    The feed URL is deliberately *not* passed to feedparser as ``Content-Location``: feedparser
    would then resolve a relative-looking guid ("1234") against it, and the keys of every item
    would change when the feed moves (http → https, a new path), flooding the channel with
    "new" items. Links are resolved here instead.
    """
    if not body.strip():
        raise ParseError(url, "empty body: the server answered with no content")
    response_headers = {k.lower(): v for k, v in (headers or {}).items()}
    # Not ours to give feedparser: see the docstring.
    response_headers.pop("content-location", None)
    data: Any = feedparser.parse(
        io.BytesIO(body),
        response_headers=response_headers,
        resolve_relative_uris=False,  # links inside HTML are dropped with the tags
        sanitize_html=True,
    )
    feed: Mapping[str, Any] = _get(data, "feed") or {}
    raw_entries: list[Mapping[str, Any]] = list(_get(data, "entries") or ())
    version: str = _get(data, "version") or ""
    bozo = _bozo_message(data)

    if not raw_entries and not version:
        if _looks_like_html(body, response_headers):
            raise ParseError(
                url,
                "not a feed: looks like an HTML page; use the page's RSS or Atom link instead",
            )
        raise ParseError(url, f"not a feed: {bozo or 'no RSS, RDF or Atom elements found'}")

    feed_language = _language(_get(feed, "language")) or _language(language)
    entries: list[Entry] = []
    seen: set[str] = set()
    for raw in raw_entries:
        entry = _entry(raw, url=url, fallback_language=feed_language)
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
    )


def _entry(raw: Mapping[str, Any], *, url: str, fallback_language: str | None) -> Entry:
    title = _text_field(raw, "title")
    summary = _text_field(raw, "summary")
    content = _content(raw)
    link = _absolute_http_link(_get(raw, "link"), url)
    published = _datetime(_get(raw, "published_parsed"))
    updated = _datetime(_get(raw, "updated_parsed"))
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
