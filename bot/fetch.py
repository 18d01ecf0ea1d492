"""HTTP for feeds: conditional GET, limits, redirects and the address guard → FetchResult.

One :class:`Fetcher` wraps one ``httpx.Client``; every request goes through
``_GuardedTransport``, which runs the checks on *every* hop of a redirect chain
(scheme, credentials, address), clamps each hop's timeouts to what is left of the fetch's
deadline and caps the raw bytes of every response, redirects included::

    Fetcher.fetch ─▶ httpx.Client (redirects, no cookies) ─▶ _GuardedTransport ─▶ HTTPTransport

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
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Generic, Self, TypeVar
from urllib.parse import urlsplit

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
    "check_address",
    "check_url",
]

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
    max_connections: int = 16  # fetch_many's workers, and the connection pool
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
    guard, limits and deadline still apply on top of it.
    """

    def __init__(
        self,
        limits: FetchLimits | None = None,
        *,
        allow_private: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.limits = limits or FetchLimits()
        self.allow_private = allow_private
        inner = transport or httpx.HTTPTransport(
            trust_env=False,
            limits=httpx.Limits(
                max_connections=self.limits.max_connections,
                max_keepalive_connections=self.limits.max_connections,
            ),
        )
        self._client = httpx.Client(
            transport=_GuardedTransport(inner, self.limits, allow_private=allow_private),
            trust_env=False,  # no proxy (nor netrc) taken from the environment
            follow_redirects=True,
            max_redirects=self.limits.max_redirects,
            timeout=httpx.Timeout(
                connect=self.limits.connect_timeout,
                read=self.limits.read_timeout,
                write=self.limits.read_timeout,
                pool=self.limits.deadline,
            ),
            headers={"User-Agent": USER_AGENT, "Accept": ACCEPT},
            # A jar whose policy refuses every cookie: nothing set by one feed is ever sent,
            # to it or to another.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )

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
        self, requests: Iterable[FetchRequest[K]]
    ) -> Generator[tuple[FetchRequest[K], FetchResult | FetchError], None, None]:
        """Fetch concurrently; yield ``(request, result or error)`` as each one completes.

        At most ``max_connections`` fetches run at once and at most ``max_per_host`` to one
        host:port (of the feed's URL). Requests wait in a queue per host and are handed to
        the thread pool only when their host has room, so a worker never sits blocked behind
        a busy host while other hosts wait. A FetchError is yielded, not raised; any other
        exception is a bug and propagates. Closing the generator early waits for the fetches
        already running and starts no more.
        """
        limits = self.limits
        queues: dict[str, deque[FetchRequest[K]]] = {}
        for request in requests:
            queues.setdefault(_host_key(request.url), deque()).append(request)
        active = dict.fromkeys(queues, 0)
        running: dict[Future[FetchResult | FetchError], tuple[str, FetchRequest[K]]] = {}

        pool = ThreadPoolExecutor(limits.max_connections, thread_name_prefix="fetch")

        def top_up() -> None:
            # Round-robin over hosts so that one big host does not go first every time.
            progress = True
            while progress and len(running) < limits.max_connections:
                progress = False
                for host, queue in queues.items():
                    if len(running) >= limits.max_connections:
                        break
                    if queue and active[host] < limits.max_per_host:
                        request = queue.popleft()
                        active[host] += 1
                        running[pool.submit(self._fetch_or_error, request)] = (host, request)
                        progress = True

        try:
            top_up()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                finished = []
                for future in done:
                    host, request = running.pop(future)
                    active[host] -= 1
                    finished.append((request, future))
                top_up()  # before yielding, so that the caller's work overlaps the next fetches
                for request, future in finished:
                    yield request, future.result()
        finally:
            # Also when the caller stops early: wait for what is running (bounded by the
            # deadline), never leave threads behind.
            pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_or_error(self, request: FetchRequest[K]) -> FetchResult | FetchError:
        try:
            return self.fetch(request.url, etag=request.etag, last_modified=request.last_modified)
        except FetchError as exc:
            return exc

    def _read(self, url: str, response: httpx.Response, deadline: float) -> FetchResult:
        headers = {name.lower(): value for name, value in response.headers.items()}
        final_url = str(response.url)
        status = response.status_code
        if status == 304:
            return FetchResult(url=final_url, status=status, body=None, headers=headers)
        if not 200 <= status < 300:
            where = f" (at {final_url})" if final_url != url else ""
            message = f"HTTP {status} {response.reason_phrase}".rstrip() + where
            raise HTTPStatusError(url, message, status=status, headers=headers)

        cap = self.limits.max_body_bytes
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > cap:
            raise FetchError(url, f"body over {_size(cap)} (Content-Length: {declared})")
        body = bytearray()
        # iter_bytes() yields decompressed bytes: the cap holds after decompression too.
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > cap:
                raise FetchError(url, f"body over {_size(cap)}")
            if time.monotonic() > deadline:
                raise FetchError(url, _deadline_message(self.limits))
        return FetchResult(url=final_url, status=status, body=bytes(body), headers=headers)

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


def check_address(host: str) -> None:
    """Refuse a host that is, or resolves to, a non-public address (see DESIGN "Address guard").

    Raises FetchError (with ``url=host``) naming the address and its kind. This is the seam
    for the full guard: it checks every address the name resolves to, but the connection
    still makes its own lookup; connecting to the checked address is a later change.
    """
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError(host, f"could not resolve host {host}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        kind = _non_public_kind(address)
        if kind is not None:
            named = host if str(address) == host else f"{host} ({address})"
            raise FetchError(host, f"refusing {named}: a {kind} address; {ALLOW_PRIVATE_HINT}")


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
        self, inner: httpx.BaseTransport, limits: FetchLimits, *, allow_private: bool
    ) -> None:
        self._inner = inner
        self._limits = limits
        self._allow_private = allow_private

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        check_url(url)
        if not self._allow_private:
            try:
                # raw_host: the ASCII (IDNA) form that the resolver is given.
                check_address(request.url.raw_host.decode("ascii"))
            except FetchError as exc:
                raise FetchError(url, exc.message) from exc
        deadline = request.extensions.get(_DEADLINE)
        if isinstance(deadline, float):
            self._clamp_timeouts(request, deadline)
        response = self._inner.handle_request(request)
        if not isinstance(response.stream, httpx.SyncByteStream):  # pragma: no cover
            raise TypeError("the transport returned an async stream to a sync client")
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
