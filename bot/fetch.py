"""HTTP for feeds: conditional GET, limits, redirects and the address guard → FetchResult.

One :class:`Fetcher` wraps one ``httpx.Client``; every request goes through
``_GuardedTransport``, which runs the checks on *every* hop of a redirect chain
(scheme, credentials, address), clamps each hop's timeouts to what is left of the fetch's
deadline and caps the raw bytes of every response, redirects included::

    Fetcher.fetch ─▶ httpx.Client (redirects, no cookies) ─▶ _GuardedTransport ─▶ HTTPTransport

Names are resolved by :class:`_GuardedBackend` (httpcore's network backend, swapped into
httpx's transport): it resolves once, checks every address, and connects to the checked
address, so a second lookup can never rebind the name to loopback. TLS SNI, certificate
checks and the ``Host`` header keep the name. Bodies are read raw and decompressed here
with an output bound (httpx's own decoder has none: a 1 MB gzip can inflate to 1 GB).

httpx errors are translated here, once, into :class:`~bot.errors.FetchError` with a short
message; a non-2xx answer (other than 304) becomes :class:`HTTPStatusError`, which keeps the
response headers so that a caller can honour ``Retry-After``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from queue import SimpleQueue
from types import TracebackType
from typing import Generic, Self, TypeVar
from urllib.parse import urlsplit

import httpcore
import httpx

from bot import USER_AGENT
from bot.errors import FetchError
from bot.model import FetchResult

__all__ = [
    "ACCEPT",
    "FetchLimits",
    "FetchRequest",
    "Fetcher",
    "HTTPStatusError",
    "Resolver",
    "check_address",
    "check_url",
    "system_resolver",
]

# host, port → the addresses to try, in order. Tests inject one that maps any name anywhere.
Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), addresses in its order, deduplicated."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))

ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)
ALLOW_PRIVATE_HINT = (
    "set POLICYBOT_ALLOW_PRIVATE_ADDRESSES=true if this feed is meant to be internal"
)

# Request extensions (httpx passes unknown keys through untouched): the fetch's deadline on
# the monotonic clock, and which timeouts the transport shortened to meet it.
_DEADLINE = "policybot.deadline"
_CLAMPED = "policybot.clamped"

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """Per-fetch time and size limits, and how many fetches run at once."""

    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # longest wait for any one read
    deadline: float = 60.0  # the whole fetch, redirects and body included
    max_body_bytes: int = 10 * 1024 * 1024  # after decompression, and raw for every hop
    max_connections: int = 16  # fetch_many's workers; the connection pool keeps twice that
    max_per_host: int = 2  # concurrent fetches to one host:port in fetch_many
    max_redirects: int = 5


@dataclass(frozen=True, slots=True)
class FetchRequest(Generic[K]):
    """One GET for :meth:`Fetcher.fetch_many`; ``key`` is the caller's (a feed id)."""

    key: K
    url: str
    etag: str | None = None
    last_modified: str | None = None


class HTTPStatusError(FetchError):
    """The server answered with a status we do not read (not 2xx, not 304).

    ``headers`` are the response's, names lower-cased (``retry-after`` for 429/503).
    """

    def __init__(
        self, url: str, message: str, *, status: int, headers: dict[str, str]
    ) -> None:
        super().__init__(url, message, status=status)
        self.headers = headers


class Fetcher:
    """Fetches feeds over one ``httpx.Client``. Use as a context manager, or call close().

    ``allow_private`` lets feeds resolve to loopback and private ranges (tests, intranets).
    ``transport`` replaces the network transport (``httpx.MockTransport`` in tests); the
    guard, limits and deadline still apply on top of it (names are then resolved and checked
    before the transport is called). ``resolver`` replaces the system resolver (tests map a
    public-looking name to loopback with it).
    """

    def __init__(
        self,
        limits: FetchLimits | None = None,
        *,
        allow_private: bool = False,
        transport: httpx.BaseTransport | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.limits = limits or FetchLimits()
        self.allow_private = allow_private
        if transport is None:
            inner: httpx.BaseTransport = _guarded_http_transport(
                self.limits, _GuardedBackend(resolver, allow_private=allow_private))
        else:
            inner = transport
        self._client = httpx.Client(
            transport=_GuardedTransport(
                inner, self.limits, allow_private=allow_private, resolver=resolver,
                check_names=transport is not None),
            trust_env=False,  # no proxy (nor netrc) taken from the environment
            follow_redirects=True,
            max_redirects=self.limits.max_redirects,
            timeout=httpx.Timeout(
                connect=self.limits.connect_timeout,
                read=self.limits.read_timeout,
                write=self.limits.read_timeout,
                pool=self.limits.deadline,
            ),
            # gzip only: we decompress it ourselves, with a bound (see _decoded).
            headers={"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Encoding": "gzip"},
            # A jar whose policy refuses every cookie: nothing set by one feed is ever sent,
            # to it or to another.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )
        # fetch_many reads at most this many requests ahead of its fetches: each is a feed
        # the poller has claimed, whose lease runs while it waits, so no more wait than one
        # claim batch (bot.app claims 4 × the connections at a time).
        self.queue_ahead = 4 * self.limits.max_connections
        # fetch_many's workers live as long as the client (and its kept-alive connections):
        # starting them anew for every batch cost more than a warm batch's requests (issue 7).
        self._workers: ThreadPoolExecutor | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=True, cancel_futures=True)
            self._workers = None
        self._client.close()

    def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """GET ``url``; 2xx → body, 304 → ``body=None``; anything else raises FetchError.

        ``etag`` and ``last_modified`` are sent back exactly as last received
        (``If-None-Match``, ``If-Modified-Since``); they are never built from our clock.
        ``FetchResult.url`` is the final URL after redirects.
        """
        check_url(url)
        host = urlsplit(url).hostname or ""
        if not self.allow_private and _ip_literal(host) is not None:
            # Before httpx, whose URL parser rejects some spellings (0177.0.0.1) that
            # resolvers accept: the refusal should say what the address really is.
            try:
                check_address(host)
            except FetchError as exc:
                raise FetchError(url, exc.message) from exc
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        deadline = time.monotonic() + self.limits.deadline
        try:
            with self._client.stream(
                "GET", url, headers=headers, extensions={_DEADLINE: deadline}
            ) as response:
                return self._read(url, response, deadline)
        except FetchError as exc:
            if exc.url == url:
                raise
            # Raised on a redirect hop: name the feed, and say where it went wrong.
            raise FetchError(url, f"{exc.message} (at {exc.url})", status=exc.status) from exc
        except httpx.InvalidURL as exc:
            raise FetchError(url, f"invalid URL: {exc}") from exc
        except httpx.RequestError as exc:
            raise FetchError(url, self._describe(exc)) from exc

    def fetch_many(
        self, requests: Iterable[FetchRequest[K]], *, idle: Callable[[], None] | None = None,
    ) -> Generator[tuple[FetchRequest[K], FetchResult | FetchError], None, None]:
        """Fetch concurrently; yield ``(request, result or error)`` as each one completes.
        ``idle`` is called whenever no fetch has finished and the generator is about to wait
        for one (the poller commits its open writes then).

        At most ``max_connections`` fetches run at once and at most ``max_per_host`` to one
        host:port (of the feed's URL). Requests wait in a queue per host and are handed to
        the thread pool only when their host has room, so a worker never sits blocked behind
        a busy host while other hosts wait. ``requests`` is read as it is needed, at most
        ``queue_ahead`` ahead of the fetches (the poller claims feeds while earlier ones are
        fetched, so that its fetches never drain between batches). A FetchError is yielded, not
        raised; any other exception is a bug and propagates. Closing the generator early
        waits for the fetches already running and starts no more.
        """
        limits = self.limits
        pending = iter(requests)
        exhausted = False
        # Read ahead: enough to fill every connection, more while the queued requests are
        # all for hosts at their limit, never more than queue_ahead.
        queues: dict[str, deque[FetchRequest[K]]] = {}
        active: dict[str, int] = {}
        queued = 0
        running: dict[Future[FetchResult | FetchError], tuple[str, FetchRequest[K]]] = {}
        # Finished fetches arrive here, in the order they finish. (concurrent.futures.wait
        # installs a waiter on every running future at each call: with a warm cycle's
        # quick 304s that bookkeeping cost as much as the requests.)
        finished: SimpleQueue[Future[FetchResult | FetchError]] = SimpleQueue()

        if self._workers is None:
            self._workers = ThreadPoolExecutor(limits.max_connections,
                                               thread_name_prefix="fetch")
        pool = self._workers

        def read_ahead(wanted: int) -> None:
            nonlocal exhausted, queued
            while not exhausted and queued < wanted:
                request = next(pending, None)
                if request is None:
                    exhausted = True
                    return
                host = _host_key(request.url)
                if host not in queues:
                    queues[host] = deque()
                    active.setdefault(host, 0)
                queues[host].append(request)
                queued += 1

        def start_some() -> None:
            # Round-robin over hosts so that one big host does not go first every time.
            nonlocal queued
            progress = True
            while progress and len(running) < limits.max_connections:
                progress = False
                for host, queue in list(queues.items()):
                    if len(running) >= limits.max_connections:
                        break
                    if queue and active[host] < limits.max_per_host:
                        request = queue.popleft()
                        queued -= 1
                        active[host] += 1
                        future = pool.submit(self._fetch_or_error, request)
                        running[future] = (host, request)
                        future.add_done_callback(finished.put)
                        progress = True
                    if not queue:
                        del queues[host]

        def top_up() -> None:
            read_ahead(2 * limits.max_connections)
            start_some()
            while len(running) < limits.max_connections and not exhausted \
                    and queued < self.queue_ahead:
                read_ahead(min(queued + limits.max_connections, self.queue_ahead))
                start_some()

        try:
            top_up()
            while running:
                if idle is not None and finished.empty():
                    idle()
                done = [finished.get()]
                while not finished.empty():
                    done.append(finished.get())
                results = []
                for future in done:
                    host, request = running.pop(future)
                    active[host] -= 1
                    if not active[host] and host not in queues:
                        del active[host]
                    results.append((request, future))
                top_up()  # before yielding, so that the caller's work overlaps the next fetches
                for request, future in results:
                    yield request, future.result()
        finally:
            # Also when the caller stops early: wait for what is running (bounded by the
            # deadline), never leave a fetch behind. (The workers stay for the next call;
            # close() stops them.)
            for future in running:
                future.cancel()
            wait(running)

    def _fetch_or_error(self, request: FetchRequest[K]) -> FetchResult | FetchError:
        try:
            return self.fetch(request.url, etag=request.etag, last_modified=request.last_modified)
        except FetchError as exc:
            return exc

    def _read(self, url: str, response: httpx.Response, deadline: float) -> FetchResult:
        headers = {name.lower(): value for name, value in response.headers.items()}
        final_url = str(response.url)
        status = response.status_code
        permanent = _permanent_target(response)
        if status == 304:
            # A 304 has no body, but the connection goes back to the pool only once the
            # parser has read to the end of the message: unread, it was closed, and every
            # feed of a warm cycle paid for a new connection (issue 7). The raw stream is
            # capped (_CappedStream), so a server that sends a body anyway cannot flood us.
            for _ in response.iter_raw():
                pass
            return FetchResult(url=final_url, status=status, body=None, headers=headers,
                               permanent_url=permanent)
        if not 200 <= status < 300:
            where = f" (at {final_url})" if final_url != url else ""
            message = f"HTTP {status} {response.reason_phrase}".rstrip() + where
            raise HTTPStatusError(url, message, status=status, headers=headers)

        cap = self.limits.max_body_bytes
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > cap:
            raise FetchError(url, f"body over {_size(cap)} (Content-Length: {declared})")
        body = bytearray()
        for piece in _decoded(url, response.iter_raw(), headers.get("content-encoding", ""),
                              room=lambda: cap + 1 - len(body)):
            body.extend(piece)
            if len(body) > cap:
                raise FetchError(url, f"body over {_size(cap)}")
            if time.monotonic() > deadline:
                raise FetchError(url, _deadline_message(self.limits))
        return FetchResult(url=final_url, status=status, body=bytes(body), headers=headers,
                           permanent_url=permanent)

    def _describe(self, exc: httpx.RequestError) -> str:
        """One short line for an httpx error; the original stays chained as ``__cause__``."""
        if isinstance(exc, httpx.TimeoutException):
            phase = {
                httpx.ConnectTimeout: "connect",
                httpx.ReadTimeout: "read",
                httpx.WriteTimeout: "write",
                httpx.PoolTimeout: "pool",
            }.get(type(exc), "")
            if phase in _clamped_phases(exc):
                return _deadline_message(self.limits)
            return {
                "connect": "timed out connecting",
                "read": "timed out reading",
                "write": "timed out sending",
                "pool": "timed out waiting for a free connection",
            }.get(phase, "timed out")
        if isinstance(exc, httpx.TooManyRedirects):
            return f"too many redirects (more than {self.limits.max_redirects})"
        if isinstance(exc, httpx.UnsupportedProtocol):
            return "only http and https URLs are fetched"
        tls = _find_cause(exc, ssl.SSLError)
        if tls is not None:
            reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None)
            return f"TLS error: {reason}" if reason else "TLS error"
        if isinstance(exc, httpx.ConnectError):
            if _find_cause(exc, ConnectionRefusedError) is not None:
                return "connection refused"
            if _find_cause(exc, socket.gaierror) is not None:
                return f"could not resolve host {_request_host(exc)}".rstrip()
            return f"could not connect: {_text(exc)}"
        if isinstance(exc, httpx.RemoteProtocolError):
            return f"the server broke the HTTP protocol: {_text(exc)}"
        if isinstance(exc, httpx.DecodingError):
            return f"could not decode the body: {_text(exc)}"
        return f"network error: {_text(exc)}"


def check_url(url: str) -> None:
    """Refuse what is never fetched: other schemes, credentials in the URL, no host."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise FetchError(url, f"invalid URL: {exc}") from exc
    if parts.scheme.lower() not in {"http", "https"}:
        raise FetchError(url, "only http and https URLs are fetched")
    if "@" in parts.netloc:
        raise FetchError(url, "credentials in the URL are not allowed; remove the user:password@")
    if not parts.hostname:
        raise FetchError(url, "the URL has no host")


def check_address(host: str, *, resolver: Resolver = system_resolver,
                  port: int = 443) -> list[_IP_ADDRESS]:
    """Refuse a host that is, or resolves to, a non-public address (see DESIGN "Address guard").

    Returns the checked addresses (to connect to, in order). Raises FetchError (with
    ``url=host``) naming the address and its kind; every resolved address must be public,
    since the connection may go to any of them.
    """
    addresses = resolve(host, port, resolver)
    for address in addresses:
        kind = _non_public_kind(address)
        if kind is not None:
            named = host if str(address) == host else f"{host} ({address})"
            raise FetchError(host, f"refusing {named}: a {kind} address; {ALLOW_PRIVATE_HINT}")
    return addresses


def resolve(host: str, port: int, resolver: Resolver = system_resolver) -> list[_IP_ADDRESS]:
    """The addresses of ``host``: itself when it is an IP literal in any spelling (decimal,
    hex, octal IPv4 included), else what ``resolver`` says. FetchError when it says nothing."""
    literal = _ip_literal(host)
    if literal is not None:
        return [literal]
    try:
        found = [ipaddress.ip_address(a.split("%")[0]) for a in resolver(host, port)]
    except (OSError, UnicodeError, ValueError) as exc:
        raise FetchError(host, f"could not resolve host {host}") from exc
    if not found:
        raise FetchError(host, f"could not resolve host {host}")
    return found


_IP_ADDRESS = ipaddress.IPv4Address | ipaddress.IPv6Address
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}$", re.I)


def _ip_literal(host: str) -> _IP_ADDRESS | None:
    candidate = host.strip("[]").split("%")[0]
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    # Decimal, hex and octal spellings (2130706433, 0x7f.1, 0177.0.0.1) are IPv4 to
    # inet_aton and to the resolver, so they are to us.
    if _NUMERIC_HOST.match(candidate):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(candidate))
        except OSError:
            return None
    return None


def _non_public_kind(address: _IP_ADDRESS) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _non_public_kind(address.ipv4_mapped)
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),  # CGNAT 100.64/10, documentation ranges …
    )
    return next((kind for kind, hit in checks if hit), None)


class _GuardedTransport(httpx.BaseTransport):
    """Checks each hop before it connects, and keeps each hop inside the fetch's limits."""

    def __init__(
        self, inner: httpx.BaseTransport, limits: FetchLimits, *, allow_private: bool,
        resolver: Resolver = system_resolver, check_names: bool = False,
    ) -> None:
        self._inner = inner
        self._limits = limits
        self._allow_private = allow_private
        self._resolver = resolver
        # With the real network, names are checked where they are connected to
        # (_GuardedBackend); an injected transport connects nowhere, so check them here.
        self._check_names = check_names

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        check_url(url)
        # raw_host: the ASCII (IDNA) form that the resolver is given.
        host = request.url.raw_host.decode("ascii")
        if not self._allow_private and (self._check_names or _ip_literal(host) is not None):
            try:
                check_address(host, resolver=self._resolver, port=request.url.port or 0)
            except FetchError as exc:
                raise FetchError(url, exc.message) from exc
        deadline = request.extensions.get(_DEADLINE)
        if isinstance(deadline, float):
            self._clamp_timeouts(request, deadline)
        try:
            response = self._inner.handle_request(request)
        except FetchError as exc:
            if exc.url == url:
                raise
            raise FetchError(url, exc.message, status=exc.status) from exc
        if not isinstance(response.stream, httpx.SyncByteStream):  # pragma: no cover
            raise TypeError("the transport returned an async stream to a sync client")
        if response.has_redirect_location:  # not is_redirect: that is any 3xx, 304 too
            # httpx reads (and decompresses, without a bound) a redirect's body before it
            # follows it. Nobody needs that body: drop it unread.
            response.stream.close()
            return httpx.Response(status_code=response.status_code, headers=[
                (k, v) for k, v in response.headers.multi_items()
                if k.lower() not in ("content-encoding", "content-length")
            ], stream=httpx.ByteStream(b""), extensions=response.extensions)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, url, self._limits, deadline),
            extensions=response.extensions,
        )

    def _clamp_timeouts(self, request: httpx.Request, deadline: float) -> None:
        # No single connect or read may outlast the deadline: a server that sends one byte
        # and then nothing would otherwise hold us for the whole read timeout, per read.
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(str(request.url), _deadline_message(self._limits))
        timeout = dict(request.extensions.get("timeout") or {})
        clamped = []
        for phase in ("connect", "read", "write", "pool"):
            value = timeout.get(phase)
            if value is None or value > remaining:
                timeout[phase] = remaining
                clamped.append(phase)
        request.extensions = {**request.extensions, "timeout": timeout, _CLAMPED: clamped}

    def close(self) -> None:
        self._inner.close()


class _CappedStream(httpx.SyncByteStream):
    """The raw (still compressed) bytes of one hop, cut at the cap and at the deadline.

    Redirect bodies are read by httpx itself; this is what bounds them.
    """

    def __init__(
        self, inner: httpx.SyncByteStream, url: str, limits: FetchLimits, deadline: object
    ) -> None:
        self._inner = inner
        self._url = url
        self._limits = limits
        self._deadline = deadline if isinstance(deadline, float) else None

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        cap = self._limits.max_body_bytes
        for chunk in self._inner:
            seen += len(chunk)
            if seen > cap:
                raise FetchError(self._url, f"body over {_size(cap)}")
            if self._deadline is not None and time.monotonic() > self._deadline:
                raise FetchError(self._url, _deadline_message(self._limits))
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's network backend with the address guard in its connect: the name is
    resolved once, every address checked, and the socket connected to a checked address.
    httpcore still hands the *name* to TLS (SNI, certificate) and httpx to ``Host``."""

    def __init__(self, resolver: Resolver, *, allow_private: bool) -> None:
        self._resolver = resolver
        self._allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if self._allow_private:
            addresses = resolve(host, port, self._resolver)
        else:
            addresses = check_address(host, resolver=self._resolver, port=port)
        error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return super().connect_tcp(str(address), port, timeout, local_address,
                                           socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc  # try the next address, as getaddrinfo users do
        assert error is not None
        raise error


class _ConnectionPool(httpcore.ConnectionPool):
    """httpcore's pool with its bookkeeping made linear, and without a race.

    httpcore 1.0's ``_assign_requests_to_connections`` runs twice per request (when it is
    queued, when its response closes) and asks *every* connection whether it has expired —
    a ``poll()`` of each idle socket — and counts connections once per connection: with the
    few dozen kept-alive connections of a cycle over many hosts that was ≈ 1.5 ms of CPU per
    request, half of a warm (all 304) cycle (issue 7). Here an idle connection's socket is
    checked when the connection is about to be reused (the one place a server-closed
    connection would fail a request), and every idle connection at most once a second.

    The race (encode/httpcore#1110, in 1.0.9): a pass that closes idle connections (over the
    keep-alive limit, or to make room at the connection limit) could close one it had just
    assigned to another thread's request, which stays idle until that thread starts it; the
    request then failed with "Bad file descriptor" or waited for its whole read timeout.
    Connections assigned to pending requests are neither closed nor handed to a second
    request.
    """

    SWEEP_EVERY = 1.0  # seconds between checks of every idle connection's socket

    _next_sweep = 0.0

    def _assign_requests_to_connections(self) -> list[httpcore.ConnectionInterface]:
        closing: list[httpcore.ConnectionInterface] = []
        connections = self._connections
        assigned = {id(r.connection) for r in self._requests if r.connection is not None}
        now = time.monotonic()
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + self.SWEEP_EVERY

        def expired(connection: httpcore.ConnectionInterface) -> bool:
            # Idle and unclaimed, and the server has closed it or its keep-alive is over.
            return id(connection) not in assigned and connection.is_idle() \
                and connection.has_expired()

        for connection in list(connections):
            if connection.is_closed():
                connections.remove(connection)
            elif id(connection) in assigned:
                continue
            elif (sweep and expired(connection)) or (
                    connection.is_idle()
                    and len(connections) > self._max_keepalive_connections):
                connections.remove(connection)
                closing.append(connection)

        for pool_request in self._requests:
            if not pool_request.is_queued():
                continue
            origin = pool_request.request.url.origin
            chosen = None
            for connection in list(connections):
                if (id(connection) in assigned or not connection.can_handle_request(origin)
                        or not connection.is_available()):
                    continue
                if not sweep and expired(connection):
                    connections.remove(connection)
                    closing.append(connection)
                    continue
                chosen = connection
                break
            if chosen is None:
                if len(connections) >= self._max_connections:
                    idle = next((c for c in connections
                                 if c.is_idle() and id(c) not in assigned), None)
                    if idle is None:
                        continue  # the pool is full of busy connections: wait
                    connections.remove(idle)
                    closing.append(idle)
                chosen = self.create_connection(origin)
                connections.append(chosen)
            pool_request.assign_to_connection(chosen)
            assigned.add(id(chosen))
        return closing


def _guarded_http_transport(limits: FetchLimits, backend: _GuardedBackend) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx.HTTPTransport takes no network backend, so its pool is replaced by one built the
    # same way with ours (test_fetch's resolver tests fail loudly if httpx changes this).
    transport._pool = _ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        # Room for the fetches running plus as many idle connections, so that a cycle over
        # many hosts reuses connections instead of closing one for every new host.
        max_connections=2 * limits.max_connections,
        max_keepalive_connections=2 * limits.max_connections,
        # Longer than `policybot run`'s poll tick, so that a connection outlives the gap
        # between cycles; one the server has closed meanwhile is noticed and replaced.
        keepalive_expiry=60.0,
        network_backend=backend,
    )
    return transport


def _permanent_target(response: httpx.Response) -> str | None:
    """Where the 301/308 hops that start the chain lead (RFC 9110 §15.4.2, §15.4.9): the
    URL after the last permanent hop before any temporary one; None without one."""
    target = None
    hops = [*response.history, response]
    for hop, following in zip(hops, hops[1:], strict=False):
        if hop.status_code not in (301, 308):
            break
        target = str(following.url)
    return target


def _decoded(
    url: str, raw: Iterable[bytes], encoding: str, *, room: Callable[[], int]
) -> Iterator[bytes]:
    """The body, decompressed without ever producing more than ``room()`` bytes at a time.

    We only ask for gzip (``Accept-Encoding``); deflate is read too, since servers send it
    unasked. zlib's ``max_length`` bounds each output; what it has not consumed yet stays
    in ``unconsumed_tail`` for the next round, so memory stays at the cap, not the bomb.
    """
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        yield from raw
        return
    if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
        raise FetchError(url, f"unsupported Content-Encoding: {encoding.strip()} "
                              "(only gzip was asked for)")
    # gzip: wbits 16+15; deflate: zlib-wrapped, or raw from misbehaving servers (RFC 9110
    # §8.4.1.2 notes both exist), detected from the first byte by zlib's auto mode 32+15.
    wbits = 31 if codings[0] in ("gzip", "x-gzip") else 47
    inflater = zlib.decompressobj(wbits)
    try:
        for chunk in raw:
            data = chunk
            while data:
                if inflater.eof:
                    if not data.startswith(b"\x1f\x8b"):
                        break  # padding after the end of the stream: ignored
                    inflater = zlib.decompressobj(wbits)  # another member (RFC 1952 §2.2)
                # Each call either consumes input or produces output, so this ends.
                out = inflater.decompress(data, max(room(), 1))
                data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
                if out:
                    yield out
        if not inflater.eof:
            raise FetchError(url, f"the {codings[0]} body ends before its end of stream")
    except zlib.error as exc:
        raise FetchError(url, f"could not decompress the {codings[0]} body: {exc}") from exc


def _deadline_message(limits: FetchLimits) -> str:
    return f"no complete answer within the {limits.deadline:g} s deadline"


def _host_key(url: str) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    except ValueError:
        return ""
    return f"{(parts.hostname or '').lower()}:{port}"


def _clamped_phases(exc: httpx.RequestError) -> list[str]:
    try:
        request = exc.request
    except RuntimeError:  # httpx raises this when no request was attached
        return []
    phases = request.extensions.get(_CLAMPED)
    return phases if isinstance(phases, list) else []


def _request_host(exc: httpx.RequestError) -> str:
    try:
        return exc.request.url.host
    except RuntimeError:
        return ""


_E = TypeVar("_E", bound=BaseException)


def _find_cause(exc: BaseException, kind: type[_E]) -> _E | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _size(n: int) -> str:
    for unit, factor in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"
