"""A real HTTP server on loopback that serves feeds the way a test describes them.

In the spirit of reader's ``tests/fakeparser.py``: a small class with readable steps::

    with FeedServer() as server:
        server.serve("/a.xml", rss([Item("One", guid="1")]), etag='"v1"')
        server.status("/gone.xml", 410)
        server.redirect("/old.xml", "/a.xml", 301)
        server.slow("/s.xml", body, delay=0.2)
        gate = server.gate("/g.xml", body, open_at=4)   # holds requests until 4 wait at once
        fetcher.fetch(server.url("/a.xml"))
        assert server.requests[-1].headers["user-agent"].startswith("policybot/")

It is a ``http.server.ThreadingHTTPServer`` on 127.0.0.1, port 0, in a daemon thread. Every
request is recorded in ``server.requests`` (path, method, lower-cased headers, time, Host);
``server.connections`` counts accepted TCP connections; ``server.max_in_flight`` and
``server.max_in_flight_by_host`` record the most requests handled at once (in total and per
``Host`` header), for concurrency tests that must not time anything.

``rss(items)`` and ``atom(items)`` build documents from :class:`Item` values; the benchmark
and other tests use them too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape, quoteattr

__all__ = ["FeedServer", "Gate", "Item", "Recorded", "atom", "make_items", "rss"]

Handler = Callable[["_Handler"], None]


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    path: str
    method: str
    headers: dict[str, str]  # names lower-cased
    time: float  # time.monotonic()
    host: str  # the Host header


class Gate:
    """Holds requests until ``open_at`` of them wait together, or until ``open()``.

    A barrier that never deadlocks a failing test: a held request gives up after
    ``timeout`` seconds and is answered anyway, so the test fails on its assertion instead.
    """

    def __init__(self, open_at: int | None, timeout: float) -> None:
        self.open_at = open_at
        self.timeout = timeout
        self.waiting = 0
        self.most_waiting = 0
        self._opened = threading.Event()
        self._cond = threading.Condition()

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    def open(self) -> None:
        with self._cond:
            self._opened.set()
            self._cond.notify_all()

    def wait_for_waiting(self, n: int, timeout: float = 10.0) -> bool:
        """Block the test until ``n`` requests are held at the gate."""
        with self._cond:
            return self._cond.wait_for(lambda: self.waiting >= n, timeout)

    def pass_through(self) -> None:
        with self._cond:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            if self.open_at is not None and self.waiting >= self.open_at:
                self._opened.set()
            self._cond.notify_all()
            self._cond.wait_for(self._opened.is_set, self.timeout)
            self.waiting -= 1
            self._cond.notify_all()


class FeedServer:
    """A configurable feed server on loopback; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[Recorded] = []
        self.connections = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_by_host: dict[str, int] = {}
        self.max_in_flight_by_host: dict[str, int] = {}
        self.in_flight_by_path: dict[str, int] = {}
        self.max_in_flight_by_path: dict[str, int] = {}
        self._routes: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._gates: list[Gate] = []
        self._releases: list[threading.Event] = []
        self._httpd = _Server((host, 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Free every handler still held, so that no thread outlives the test holding a socket.
        for gate in self._gates:
            gate.open()
        for event in self._releases:
            event.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/", *, host: str = "127.0.0.1") -> str:
        """The URL of ``path``; ``host`` may be another name for loopback ("localhost")."""
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    # -- routes ----------------------------------------------------------------------------

    def route(self, path: str, handler: Handler) -> None:
        """Answer ``path`` with any function of the request handler (escape hatch)."""
        self._routes[path] = handler

    def serve(
        self,
        path: str,
        body: bytes | str,
        *,
        content_type: str = "application/rss+xml; charset=utf-8",
        etag: str | None = None,
        last_modified: str | None = None,
        headers: Mapping[str, str] | None = None,
        status: int = 200,
        chunked: bool = False,
        chunk_size: int = 8192,
        latency: float = 0.0,
    ) -> None:
        """Serve ``body``; with ``etag``/``last_modified``, a request that sends them back
        (``If-None-Match`` / ``If-Modified-Since``, compared exactly) gets 304. ``latency``
        models a distant server (benchmarks), never a test's synchronisation."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        extra = dict(headers or {})
        if etag is not None:
            extra["ETag"] = etag
        if last_modified is not None:
            extra["Last-Modified"] = last_modified

        def handle(h: _Handler) -> None:
            if latency:
                time.sleep(latency)
            if _not_modified(h, etag, last_modified):
                h.send_bytes(304, b"", None, extra)
            elif chunked:
                h.send_chunked(status, data, content_type, extra, chunk_size)
            else:
                h.send_bytes(status, data, content_type, extra)

        self.route(path, handle)

    def status(
        self,
        path: str,
        code: int,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        """Answer ``path`` with ``code`` (e.g. 500, 410, 429 with ``Retry-After``)."""
        self.route(path, lambda h: h.send_bytes(code, body, "text/plain", dict(headers or {})))

    def redirect(self, path: str, to: str, code: int = 301) -> None:
        """Redirect ``path`` to ``to`` (a path on this server or any URL)."""
        self.route(path, lambda h: h.send_bytes(code, b"", "text/plain", {"Location": to}))

    def redirect_chain(self, n: int, final: str, *, prefix: str = "/hop", code: int = 302) -> str:
        """``n`` redirects ending at ``final``; returns the first path."""
        for i in range(n):
            target = f"{prefix}{i + 1}" if i + 1 < n else final
            self.redirect(f"{prefix}{i}", target, code)
        return f"{prefix}0" if n else final

    def slow(
        self,
        path: str,
        body: bytes | str,
        *,
        delay: float = 0.2,
        content_type: str = "application/rss+xml; charset=utf-8",
    ) -> None:
        """Answer after ``delay`` seconds (a slow server, not a test's synchronisation)."""
        data = body.encode("utf-8") if isinstance(body, str) else body

        def handle(h: _Handler) -> None:
            time.sleep(delay)
            h.send_bytes(200, data, content_type, {})

        self.route(path, handle)

    def gate(
        self,
        path: str,
        body: bytes | str,
        *,
        open_at: int | None = None,
        delay: float = 0.0,
        timeout: float = 10.0,
        content_type: str = "application/rss+xml; charset=utf-8",
    ) -> Gate:
        """Hold requests to ``path`` at a :class:`Gate`, then answer (after ``delay``).

        To hold several paths at one gate, make a ``Gate`` and pass it to ``gated``.
        """
        gate = Gate(open_at, timeout)
        self.gated(path, body, gate, delay=delay, content_type=content_type)
        return gate

    def gated(
        self,
        path: str,
        body: bytes | str,
        gate: Gate,
        *,
        delay: float = 0.0,
        content_type: str = "application/rss+xml; charset=utf-8",
    ) -> None:
        """Like ``gate`` but with a gate shared between paths."""
        if gate not in self._gates:
            self._gates.append(gate)
        data = body.encode("utf-8") if isinstance(body, str) else body

        def handle(h: _Handler) -> None:
            gate.pass_through()
            if delay:
                time.sleep(delay)
            h.send_bytes(200, data, content_type, {})

        self.route(path, handle)

    def stall(
        self,
        path: str,
        first: bytes,
        release: threading.Event,
        rest: bytes = b"",
        *,
        content_type: str = "application/rss+xml; charset=utf-8",
    ) -> None:
        """Send the headers and ``first``, then nothing until ``release`` is set."""
        self._releases.append(release)

        def handle(h: _Handler) -> None:
            h.start(200, content_type, {"Content-Length": str(len(first) + len(rest))})
            h.write_quietly(first)
            release.wait(timeout=30)
            h.write_quietly(rest)

        self.route(path, handle)

    def drip(
        self,
        path: str,
        body: bytes,
        *,
        interval: float,
        content_type: str = "application/rss+xml; charset=utf-8",
    ) -> None:
        """Send ``body`` one byte every ``interval`` seconds (each read is quick; the whole
        is not)."""
        stop = threading.Event()
        self._releases.append(stop)

        def handle(h: _Handler) -> None:
            h.start(200, content_type, {"Content-Length": str(len(body))})
            for i in range(len(body)):
                if stop.wait(interval) or not h.write_quietly(body[i : i + 1]):
                    return

        self.route(path, handle)

    # -- bookkeeping (called by the handler) -----------------------------------------------

    def _begin(self, record: Recorded) -> None:
        with self._lock:
            self.requests.append(record)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            n = self.in_flight_by_host.get(record.host, 0) + 1
            self.in_flight_by_host[record.host] = n
            self.max_in_flight_by_host[record.host] = max(
                self.max_in_flight_by_host.get(record.host, 0), n
            )
            n = self.in_flight_by_path.get(record.path, 0) + 1
            self.in_flight_by_path[record.path] = n
            self.max_in_flight_by_path[record.path] = max(
                self.max_in_flight_by_path.get(record.path, 0), n
            )

    def _end(self, record: Recorded) -> None:
        with self._lock:
            self.in_flight -= 1
            self.in_flight_by_host[record.host] -= 1
            self.in_flight_by_path[record.path] -= 1

    def _handler_for(self, path: str) -> Handler | None:
        return self._routes.get(path)

    def _connected(self) -> None:
        with self._lock:
            self.connections += 1


def _not_modified(h: _Handler, etag: str | None, last_modified: str | None) -> bool:
    # RFC 9110 13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    inm = h.headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip() for t in inm.split(",")]
        return etag is not None and (etag in tags or "*" in tags)
    ims = h.headers.get("If-Modified-Since")
    return ims is not None and last_modified is not None and ims == last_modified


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of concurrent connects must not overflow the backlog

    def __init__(self, address: tuple[str, int], handler: type[_Handler], owner: FeedServer):
        self.owner = owner
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner._connected()
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # a client that goes silent does not hold a thread forever

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        record = Recorded(
            path=self.path,
            method=self.command,
            headers={k.lower(): v for k, v in self.headers.items()},
            time=time.monotonic(),
            host=self.headers.get("Host", ""),
        )
        owner._begin(record)
        try:
            handler = owner._handler_for(path)
            if handler is None:
                self.send_bytes(404, b"not found", "text/plain", {})
            else:
                handler(self)
        finally:
            owner._end(record)

    do_HEAD = do_GET

    # -- response helpers for routes -------------------------------------------------------

    def start(self, status: int, content_type: str | None, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def send_bytes(
        self, status: int, body: bytes, content_type: str | None, headers: Mapping[str, str]
    ) -> None:
        all_headers = dict(headers)
        if status != 304:
            all_headers.setdefault("Content-Length", str(len(body)))
        self.start(status, content_type, all_headers)
        if self.command != "HEAD" and status != 304:
            self.write_quietly(body)

    def send_chunked(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str],
        chunk_size: int,
    ) -> None:
        self.start(status, content_type, {**headers, "Transfer-Encoding": "chunked"})
        for i in range(0, len(body), chunk_size):
            piece = body[i : i + chunk_size]
            if not self.write_quietly(b"%x\r\n%s\r\n" % (len(piece), piece)):
                return
        self.write_quietly(b"0\r\n\r\n")

    def write_quietly(self, data: bytes) -> bool:
        """Write, and report False (instead of raising) when the client has gone away."""
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        return True

    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- documents ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One feed item for :func:`rss` and :func:`atom`. ``description``/``content`` are HTML."""

    title: str
    link: str | None = None
    guid: str | None = None
    description: str | None = None
    content: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    author: str | None = None
    categories: tuple[str, ...] = field(default_factory=tuple)
    guid_is_permalink: bool = False
    language: str | None = None  # xml:lang on the item / entry


def make_items(n: int, *, start: int = 0, base: str = "https://example.org/news/") -> list[Item]:
    """``n`` distinct items, newest first, an hour apart, ending at 2026-11-25 10:00 UTC."""
    newest = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    return [
        Item(
            title=f"Item {i}",
            link=f"{base}{i}",
            guid=f"item-{i}",
            description=f"<p>Summary of item {i}.</p>",
            published=newest - timedelta(hours=i - start),
        )
        for i in range(start, start + n)
    ]


def rss(
    items: Iterable[Item],
    *,
    title: str = "Test feed",
    link: str = "https://example.org/",
    language: str | None = "en",
    encoding: str = "utf-8",
) -> bytes:
    """An RSS 2.0 document (``encoding`` is declared and used, e.g. ``"shift_jis"``)."""
    parts = [
        f'<?xml version="1.0" encoding="{encoding}"?>',
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/">',
        "<channel>",
        f"<title>{escape(title)}</title>",
        f"<link>{escape(link)}</link>",
        "<description>Test feed</description>",
    ]
    if language:
        parts.append(f"<language>{escape(language)}</language>")
    for item in items:
        lang = f" xml:lang={quoteattr(item.language)}" if item.language else ""
        parts.append(f"<item{lang}>")
        parts.append(f"<title>{escape(item.title)}</title>")
        if item.link:
            parts.append(f"<link>{escape(item.link)}</link>")
        if item.guid:
            permalink = "true" if item.guid_is_permalink else "false"
            parts.append(f'<guid isPermaLink="{permalink}">{escape(item.guid)}</guid>')
        if item.description is not None:
            parts.append(f"<description>{escape(item.description)}</description>")
        if item.content is not None:
            parts.append(f"<content:encoded>{escape(item.content)}</content:encoded>")
        if item.published:
            parts.append(f"<pubDate>{format_datetime(item.published, usegmt=True)}</pubDate>")
        if item.author:
            parts.append(f"<dc:creator>{escape(item.author)}</dc:creator>")
        parts.extend(f"<category>{escape(c)}</category>" for c in item.categories)
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "\n".join(parts).encode(encoding, errors="xmlcharrefreplace")


def atom(
    items: Iterable[Item],
    *,
    title: str = "Test feed",
    link: str = "https://example.org/",
    feed_id: str = "urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6",
    language: str | None = "en",
    updated: datetime | None = None,
) -> bytes:
    """An Atom 1.0 document, UTF-8."""
    stamp = (updated or datetime(2026, 11, 25, 10, 0, tzinfo=UTC)).isoformat()
    lang = f" xml:lang={quoteattr(language)}" if language else ""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<feed xmlns="http://www.w3.org/2005/Atom"{lang}>',
        f"<title>{escape(title)}</title>",
        f"<id>{escape(feed_id)}</id>",
        f'<link rel="alternate" href={quoteattr(link)}/>',
        f"<updated>{stamp}</updated>",
    ]
    for item in items:
        item_lang = f" xml:lang={quoteattr(item.language)}" if item.language else ""
        parts.append(f"<entry{item_lang}>")
        parts.append(f"<title>{escape(item.title)}</title>")
        if item.guid:
            parts.append(f"<id>{escape(item.guid)}</id>")
        if item.link:
            parts.append(f'<link rel="alternate" href={quoteattr(item.link)}/>')
        when = item.updated or item.published
        if when:
            parts.append(f"<updated>{when.isoformat()}</updated>")
        if item.published:
            parts.append(f"<published>{item.published.isoformat()}</published>")
        if item.author:
            parts.append(f"<author><name>{escape(item.author)}</name></author>")
        parts.extend(f"<category term={quoteattr(c)}/>" for c in item.categories)
        if item.description is not None:
            parts.append(f'<summary type="html">{escape(item.description)}</summary>')
        if item.content is not None:
            parts.append(f'<content type="html">{escape(item.content)}</content>')
        parts.append("</entry>")
    parts.append("</feed>")
    return "\n".join(parts).encode("utf-8")
