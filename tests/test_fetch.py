"""bot.fetch against a real HTTP server on loopback (tests/feedserver.py)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from feedserver import FeedServer, Gate, Item, rss

from bot import USER_AGENT
from bot.errors import FetchError
from bot.fetch import (
    ACCEPT,
    Fetcher,
    FetchLimits,
    FetchRequest,
    HTTPStatusError,
    check_address,
)
from bot.model import FetchResult

BODY = rss([Item("OSA radars for Manila", guid="1")])
LIMITS = FetchLimits(connect_timeout=5, read_timeout=10, deadline=20, max_body_bytes=64 * 1024)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as s:
        yield s


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    with Fetcher(LIMITS, allow_private=True) as f:
        yield f


def fetch_error(fetcher: Fetcher, url: str, **kwargs: str) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetcher.fetch(url, **kwargs)
    return caught.value


# -- conditional GET ----------------------------------------------------------------------


def test_conditional_get_round_trip_sends_validators_exactly_and_gets_304(
    server: FeedServer, fetcher: Fetcher
) -> None:
    last_modified = "Wed, 25 Nov 2026 10:00:00 GMT"
    server.serve("/a.xml", BODY, etag='W/"v1"', last_modified=last_modified)

    first = fetcher.fetch(server.url("/a.xml"))
    assert (first.status, first.body) == (200, BODY)
    assert (first.etag, first.last_modified) == ('W/"v1"', last_modified)
    assert "if-none-match" not in server.requests[0].headers

    second = fetcher.fetch(server.url("/a.xml"), etag=first.etag, last_modified=first.last_modified)
    assert second.not_modified and second.body is None and second.status == 304
    sent = server.requests[1].headers
    assert sent["if-none-match"] == 'W/"v1"'
    assert sent["if-modified-since"] == last_modified


def test_a_changed_etag_gets_the_new_body(server: FeedServer, fetcher: Fetcher) -> None:
    server.serve("/a.xml", BODY, etag='"v2"')
    result = fetcher.fetch(server.url("/a.xml"), etag='"v1"')
    assert (result.status, result.etag) == (200, '"v2"')


def test_response_headers_are_a_plain_dict_with_lower_case_names(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.serve("/a.xml", BODY, headers={"X-Feed-Thing": "yes"})
    result = fetcher.fetch(server.url("/a.xml"))
    assert type(result.headers) is dict
    assert result.headers["x-feed-thing"] == "yes"
    assert result.headers["content-type"] == "application/rss+xml; charset=utf-8"


def test_user_agent_and_accept_are_sent(server: FeedServer, fetcher: Fetcher) -> None:
    server.serve("/a.xml", BODY)
    fetcher.fetch(server.url("/a.xml"))
    headers = server.requests[0].headers
    assert headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("policybot/")
    assert headers["accept"] == ACCEPT


def test_a_gzip_body_is_decompressed(server: FeedServer, fetcher: Fetcher) -> None:
    server.serve("/z.xml", gzip.compress(BODY), headers={"Content-Encoding": "gzip"})
    assert fetcher.fetch(server.url("/z.xml")).body == BODY


# -- statuses -----------------------------------------------------------------------------


def test_a_500_is_a_fetch_error_with_the_status(server: FeedServer, fetcher: Fetcher) -> None:
    server.status("/broken.xml", 500)
    error = fetch_error(fetcher, server.url("/broken.xml"))
    assert error.status == 500
    assert error.message == "HTTP 500 Internal Server Error"
    assert error.url == server.url("/broken.xml")


def test_a_429_keeps_its_headers_for_retry_after(server: FeedServer, fetcher: Fetcher) -> None:
    server.status("/busy.xml", 429, headers={"Retry-After": "120"})
    error = fetch_error(fetcher, server.url("/busy.xml"))
    assert isinstance(error, HTTPStatusError)
    assert (error.status, error.headers["retry-after"]) == (429, "120")


def test_a_410_is_reported_as_gone(server: FeedServer, fetcher: Fetcher) -> None:
    server.status("/gone.xml", 410)
    assert fetch_error(fetcher, server.url("/gone.xml")).status == 410


# -- limits -------------------------------------------------------------------------------


def test_a_declared_content_length_over_the_cap_is_refused_unread(
    server: FeedServer, fetcher: Fetcher
) -> None:
    release = threading.Event()
    # Headers promise more than the cap, then the server sends nothing until released:
    # a client that tried to read the body would wait for the deadline.
    server.stall("/huge.xml", b"", release, rest=b"x" * (LIMITS.max_body_bytes + 1))
    error = fetch_error(fetcher, server.url("/huge.xml"))
    release.set()
    assert error.message == f"body over 64 KB (Content-Length: {LIMITS.max_body_bytes + 1})"


def test_a_chunked_body_over_the_cap_is_cut(server: FeedServer, fetcher: Fetcher) -> None:
    server.serve("/big.xml", b"x" * (LIMITS.max_body_bytes * 4), chunked=True, chunk_size=4096)
    error = fetch_error(fetcher, server.url("/big.xml"))
    assert error.message == "body over 64 KB"


def test_the_cap_holds_after_decompression(server: FeedServer, fetcher: Fetcher) -> None:
    bomb = gzip.compress(b" " * (LIMITS.max_body_bytes * 20))
    assert len(bomb) < LIMITS.max_body_bytes
    server.serve("/bomb.xml", bomb, headers={"Content-Encoding": "gzip"})
    assert fetch_error(fetcher, server.url("/bomb.xml")).message == "body over 64 KB"


def test_the_deadline_cuts_a_server_that_stalls_after_one_byte(server: FeedServer) -> None:
    release = threading.Event()
    server.stall("/stall.xml", b"<", release, rest=b"rss/>")
    limits = FetchLimits(connect_timeout=5, read_timeout=30, deadline=0.5)
    with Fetcher(limits, allow_private=True) as fetcher:
        error = fetch_error(fetcher, server.url("/stall.xml"))
    release.set()
    assert error.message == "no complete answer within the 0.5 s deadline"


def test_the_deadline_cuts_a_drip_that_never_trips_the_read_timeout(server: FeedServer) -> None:
    server.drip("/drip.xml", b"x" * 1000, interval=0.02)  # 20 s in all, 0.02 s per read
    limits = FetchLimits(connect_timeout=5, read_timeout=30, deadline=0.3)
    with Fetcher(limits, allow_private=True) as fetcher:
        error = fetch_error(fetcher, server.url("/drip.xml"))
    assert error.message == "no complete answer within the 0.3 s deadline"


def test_connection_refused_is_reported(fetcher: Fetcher) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now.
    assert fetch_error(fetcher, f"http://127.0.0.1:{port}/").message == "connection refused"


# -- redirects ----------------------------------------------------------------------------


def test_five_redirects_are_followed_and_the_final_url_reported(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.serve("/final.xml", BODY)
    first = server.redirect_chain(5, "/final.xml")
    result = fetcher.fetch(server.url(first))
    assert result.body == BODY
    assert result.url == server.url("/final.xml")
    assert len(server.requests) == 6


def test_six_redirects_are_too_many(server: FeedServer, fetcher: Fetcher) -> None:
    server.serve("/final.xml", BODY)
    first = server.redirect_chain(6, "/final.xml")
    error = fetch_error(fetcher, server.url(first))
    assert error.message == "too many redirects (more than 5)"
    assert "/final.xml" not in server.paths()


def test_an_error_after_a_redirect_names_the_feed_and_the_final_url(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.redirect("/old.xml", "/gone.xml", 301)
    server.status("/gone.xml", 410)
    error = fetch_error(fetcher, server.url("/old.xml"))
    assert error.url == server.url("/old.xml")
    assert error.message == f"HTTP 410 Gone (at {server.url('/gone.xml')})"


def test_a_redirect_to_another_scheme_is_refused(server: FeedServer, fetcher: Fetcher) -> None:
    server.redirect("/old.xml", "ftp://example.org/feed.xml", 301)
    error = fetch_error(fetcher, server.url("/old.xml"))
    assert error.url == server.url("/old.xml")
    assert error.message.startswith("only http and https URLs are fetched (at ftp://")


def test_no_cookie_and_no_referer_are_ever_sent(server: FeedServer, fetcher: Fetcher) -> None:
    server.route(
        "/set.xml",
        lambda h: h.send_bytes(302, b"", None, {"Location": "/a.xml", "Set-Cookie": "s=1; Path=/"}),
    )
    server.serve("/a.xml", BODY, headers={"Set-Cookie": "t=2; Path=/"})
    fetcher.fetch(server.url("/set.xml"))
    fetcher.fetch(server.url("/a.xml"))
    for request in server.requests:
        assert "cookie" not in request.headers
        assert "referer" not in request.headers


def test_no_proxy_is_taken_from_the_environment(
    server: FeedServer, fetcher: Fetcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9/")
    server.serve("/a.xml", BODY)
    with Fetcher(LIMITS, allow_private=True) as fresh:
        assert fresh.fetch(server.url("/a.xml")).status == 200


# -- the address guard --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/feed.xml", "gopher://example.org/"]
)
def test_only_http_and_https_are_fetched(fetcher: Fetcher, url: str) -> None:
    assert fetch_error(fetcher, url).message == "only http and https URLs are fetched"


def test_credentials_in_the_url_are_refused(server: FeedServer, fetcher: Fetcher) -> None:
    error = fetch_error(fetcher, f"http://user:pw@{server.netloc}/a.xml")
    assert "credentials" in error.message
    assert server.connections == 0


def test_a_private_address_is_refused_before_connecting(server: FeedServer) -> None:
    server.serve("/a.xml", BODY)
    with Fetcher(LIMITS, allow_private=False) as guarded:
        error = fetch_error(guarded, server.url("/a.xml"))
        by_name = fetch_error(guarded, server.url("/a.xml", host="localhost"))
    assert "loopback" in error.message
    assert "POLICYBOT_ALLOW_PRIVATE_ADDRESSES" in error.message
    assert "loopback" in by_name.message
    assert server.connections == 0
    assert server.requests == []


def test_a_redirect_to_a_private_address_is_refused_at_the_hop() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data"})

    with Fetcher(LIMITS, transport=httpx.MockTransport(handler)) as guarded:
        error = fetch_error(guarded, "http://93.184.215.14/feed.xml")
    assert seen == ["http://93.184.215.14/feed.xml"]
    assert error.url == "http://93.184.215.14/feed.xml"
    assert "169.254.169.254" in error.message and "link-local" in error.message


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",  # decimal 127.0.0.1
        "0x7f.0.0.1",
        "0177.0.0.1",  # octal
        "::1",
        "::ffff:127.0.0.1",
        "10.1.2.3",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",  # CGNAT
        "0.0.0.0",
        "224.0.0.1",
        "fd00::1",
        "localhost",
    ],
)
def test_check_address_refuses_non_public_addresses(host: str) -> None:
    with pytest.raises(FetchError, match="refusing"):
        check_address(host)


def test_check_address_lets_a_public_address_through() -> None:
    check_address("93.184.215.14")
    check_address("2606:2800:21f:cb07:6820:80da:af6b:8b2c")


# -- fetch_many ---------------------------------------------------------------------------


def test_fetch_many_yields_each_request_with_its_result_or_error(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.serve("/ok.xml", BODY)
    server.status("/bad.xml", 503, headers={"Retry-After": "5"})
    requests = [
        FetchRequest(key=1, url=server.url("/ok.xml")),
        FetchRequest(key=2, url=server.url("/bad.xml")),
        FetchRequest(key=3, url="ftp://example.org/"),
    ]
    outcomes = {req.key: outcome for req, outcome in fetcher.fetch_many(requests)}
    assert isinstance(outcomes[1], FetchResult) and outcomes[1].body == BODY
    assert isinstance(outcomes[2], HTTPStatusError) and outcomes[2].status == 503
    assert isinstance(outcomes[3], FetchError)


def test_fetch_many_passes_the_validators(server: FeedServer, fetcher: Fetcher) -> None:
    server.serve("/a.xml", BODY, etag='"v1"')
    request = FetchRequest(key="a", url=server.url("/a.xml"), etag='"v1"')
    [(_, outcome)] = list(fetcher.fetch_many([request]))
    assert isinstance(outcome, FetchResult) and outcome.not_modified


def test_fetch_many_overlaps_requests_up_to_max_connections(server: FeedServer) -> None:
    limits = FetchLimits(max_connections=4, max_per_host=4, max_body_bytes=LIMITS.max_body_bytes)
    # Requests wait at the gate until 4 are there at once: proof of overlap without a clock.
    gate = Gate(open_at=4, timeout=10)
    for i in range(20):
        server.gated(f"/s{i}.xml", BODY, gate, delay=0.01)
    requests = [FetchRequest(key=i, url=server.url(f"/s{i}.xml")) for i in range(20)]
    with Fetcher(limits, allow_private=True) as fetcher:
        outcomes = list(fetcher.fetch_many(requests))
    assert all(isinstance(o, FetchResult) for _, o in outcomes)
    assert sorted(r.key for r, _ in outcomes) == list(range(20))
    assert gate.most_waiting == 4
    assert 1 < server.max_in_flight <= 4


def test_fetch_many_limits_concurrent_requests_per_host(server: FeedServer) -> None:
    limits = FetchLimits(max_connections=16, max_per_host=2, max_body_bytes=LIMITS.max_body_bytes)
    gate = Gate(open_at=4, timeout=10)  # 2 per host, 2 hosts
    requests = []
    for i in range(10):
        server.gated(f"/h{i}.xml", BODY, gate, delay=0.01)
        for host in ("127.0.0.1", "localhost"):
            requests.append(FetchRequest(key=(host, i), url=server.url(f"/h{i}.xml", host=host)))
    with Fetcher(limits, allow_private=True) as fetcher:
        outcomes = list(fetcher.fetch_many(requests))
    assert len(outcomes) == 20 and all(isinstance(o, FetchResult) for _, o in outcomes)
    assert gate.most_waiting == 4
    assert set(server.max_in_flight_by_host) == {
        f"127.0.0.1:{server.port}",
        f"localhost:{server.port}",
    }
    assert max(server.max_in_flight_by_host.values()) == 2
    assert 2 < server.max_in_flight <= 4


def test_fetch_many_reads_its_requests_as_it_needs_them(server: FeedServer) -> None:
    """The poller claims feeds as fetch_many reads them: it reads a bounded window ahead,
    and reads past a host at its limit to keep the other hosts' connections busy."""
    limits = FetchLimits(max_connections=4, max_per_host=2, max_body_bytes=LIMITS.max_body_bytes)
    server.serve("/a.xml", BODY)
    read: list[int] = []

    def requests() -> Iterator[FetchRequest[int]]:
        # Ten for one host first, then one for another: that one must not wait behind them.
        for i in range(300):
            read.append(i)
            host = "localhost" if i == 10 else "127.0.0.1"
            yield FetchRequest(key=i, url=server.url("/a.xml", host=host))

    with Fetcher(limits, allow_private=True) as fetcher:
        outcomes = fetcher.fetch_many(requests())
        first, _ = next(outcomes)
        read_before_first = len(read)
        ahead = fetcher.queue_ahead
        order = [first.key] + [request.key for request, _ in outcomes]
    # Read before the first result: the fetches that finished together with it (up to one
    # per connection), those running again, and at most queue_ahead waiting.
    assert 10 < read_before_first <= ahead + 2 * limits.max_connections < 300
    assert sorted(order) == list(range(300))
    assert order.index(10) < 10  # started among the first fetches, not after 0–9


def test_fetch_many_stops_cleanly_when_the_caller_stops_early(server: FeedServer) -> None:
    server.serve("/a.xml", BODY)
    requests = [FetchRequest(key=i, url=server.url("/a.xml")) for i in range(10)]
    with Fetcher(LIMITS, allow_private=True) as fetcher:
        results = fetcher.fetch_many(requests)
        first = next(results)
        results.close()
    assert isinstance(first[1], FetchResult)
    assert not [t for t in threading.enumerate() if t.name.startswith("fetch")]


# -- compression (issue 5): asked for gzip only, decompressed by us with a bound ----------


def test_only_gzip_is_asked_for(server: FeedServer, fetcher: Fetcher) -> None:
    server.serve("/a.xml", BODY)
    fetcher.fetch(server.url("/a.xml"))
    assert server.requests[0].headers["accept-encoding"] == "gzip"


def test_concatenated_gzip_members_are_one_body(server: FeedServer, fetcher: Fetcher) -> None:
    half = len(BODY) // 2
    body = gzip.compress(BODY[:half]) + gzip.compress(BODY[half:])
    server.serve("/z.xml", body, headers={"Content-Encoding": "gzip"})
    assert fetcher.fetch(server.url("/z.xml")).body == BODY


def test_a_deflate_body_sent_unasked_is_read(server: FeedServer, fetcher: Fetcher) -> None:
    server.serve("/d.xml", zlib.compress(BODY), headers={"Content-Encoding": "deflate"})
    assert fetcher.fetch(server.url("/d.xml")).body == BODY


def test_a_corrupt_gzip_body_is_a_clear_error(server: FeedServer, fetcher: Fetcher) -> None:
    server.serve("/z.xml", b"\x1f\x8b\x08\x00garbage" * 10, headers={"Content-Encoding": "gzip"})
    assert fetch_error(fetcher, server.url("/z.xml")).message.startswith(
        "could not decompress the gzip body")


def test_a_truncated_gzip_body_is_an_error_not_half_a_feed(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.serve("/z.xml", gzip.compress(BODY)[:-12], headers={"Content-Encoding": "gzip"})
    assert fetch_error(fetcher, server.url("/z.xml")).message == (
        "the gzip body ends before its end of stream")


def test_an_encoding_we_did_not_ask_for_is_refused(server: FeedServer, fetcher: Fetcher) -> None:
    server.serve("/b.xml", b"\x00\x01", headers={"Content-Encoding": "br"})
    assert fetch_error(fetcher, server.url("/b.xml")).message == (
        "unsupported Content-Encoding: br (only gzip was asked for)")


def test_a_redirect_body_is_never_decompressed(server: FeedServer, fetcher: Fetcher) -> None:
    # httpx would inflate a redirect's body in full before following it; ours is dropped.
    bomb = gzip.compress(b" " * (LIMITS.max_body_bytes * 50))
    server.route("/r.xml", lambda h: h.send_bytes(
        301, bomb, "text/html", {"Location": "/a.xml", "Content-Encoding": "gzip"}))
    server.serve("/a.xml", BODY)
    result = fetcher.fetch(server.url("/r.xml"))
    assert result.body == BODY


@pytest.fixture(scope="module")
def gigabyte_bomb(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One gzip stream (about 1 MB) that inflates to 1 GiB of zeros."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    parts = [deflater.compress(zeros) for _ in range(1024)]
    parts.append(deflater.flush())
    return b"".join(parts)


_MEASURE = """
import json, sys
from pathlib import Path
from bot.errors import FetchError
from bot.fetch import Fetcher, FetchLimits

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # KiB

with Fetcher(FetchLimits(), allow_private=True) as fetcher:
    fetcher.fetch(sys.argv[2])  # warm up: imports, pool, first connection
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    before = status("VmRSS")
    try:
        fetcher.fetch(sys.argv[1])
        message = None
    except FetchError as exc:
        message = exc.message
    peak = status("VmHWM")
print(json.dumps({"kib": peak - before, "message": message}))
"""


def test_a_gzip_bomb_inflating_to_1_gb_is_refused_with_bounded_memory(
    server: FeedServer, gigabyte_bomb: bytes
) -> None:
    server.serve("/bomb.xml", gigabyte_bomb, headers={"Content-Encoding": "gzip"})
    server.serve("/small.xml", BODY)
    # A fresh process whose peak RSS (VmHWM, reset just before the fetch) is this fetch's.
    child = subprocess.run(
        [sys.executable, "-c", _MEASURE, server.url("/bomb.xml"), server.url("/small.xml")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": "."},
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert child.returncode == 0, child.stderr
    measured = json.loads(child.stdout)
    assert measured["message"] == "body over 10 MB"
    # The cap is 10 MB; inflating the bomb would take 1024 MB.
    assert measured["kib"] < 48 * 1024, f"peak RSS grew by {measured['kib']} KiB"


# -- redirects: what the pipeline needs to adopt a permanent move -------------------------


@pytest.mark.parametrize(
    ("codes", "permanent"),
    [((301,), "/c.xml"), ((308,), "/c.xml"), ((301, 308), "/c.xml"), ((302,), None),
     ((307,), None), ((301, 302), "/b.xml"), ((302, 301), None)],
)
def test_the_permanent_target_is_where_the_leading_301_308_hops_lead(
    server: FeedServer, fetcher: Fetcher, codes: tuple[int, ...], permanent: str | None
) -> None:
    server.serve("/c.xml", BODY)
    paths = ["/a.xml", "/b.xml", "/c.xml"][-len(codes) - 1:]
    for code, here, there in zip(codes, paths, paths[1:], strict=False):
        server.redirect(here, there, code)
    result = fetcher.fetch(server.url(paths[0]))
    assert result.url == server.url("/c.xml")
    assert result.permanent_url == (server.url(permanent) if permanent else None)


def test_no_redirect_means_no_permanent_target(server: FeedServer, fetcher: Fetcher) -> None:
    server.serve("/a.xml", BODY)
    assert fetcher.fetch(server.url("/a.xml")).permanent_url is None
