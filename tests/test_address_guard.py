"""The address guard (DESIGN.md, "Address guard") against a real loopback listener.

An injected resolver plays DNS: it maps public-looking names to loopback, so that every
refusal can be checked where it matters — the loopback listener must see no connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from feedserver import FeedServer, Item, rss

from bot.errors import FetchError
from bot.fetch import Fetcher, FetchLimits

BODY = rss([Item("OSA radars for Manila", guid="1")])
LIMITS = FetchLimits(connect_timeout=5, read_timeout=10, deadline=20, max_body_bytes=64 * 1024)


class FakeDNS:
    """A resolver from a table; records every lookup. Unknown names do not resolve."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.table:
            raise OSError(f"no such name {host}")
        return self.table[host]


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as s:
        s.serve("/feed.xml", BODY)
        yield s


def refused(fetcher: Fetcher, url: str) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetcher.fetch(url)
    return caught.value


def test_a_public_looking_name_that_resolves_to_loopback_is_refused_unconnected(
    server: FeedServer,
) -> None:
    dns = FakeDNS({"feeds.example.org": ["127.0.0.1"]})
    with Fetcher(LIMITS, resolver=dns) as fetcher:
        error = refused(fetcher, f"http://feeds.example.org:{server.port}/feed.xml")
    assert error.url == f"http://feeds.example.org:{server.port}/feed.xml"
    assert "refusing feeds.example.org (127.0.0.1): a loopback address" in error.message
    assert "POLICYBOT_ALLOW_PRIVATE_ADDRESSES" in error.message
    assert server.connections == 0


def test_one_private_address_among_public_ones_is_enough_to_refuse(server: FeedServer) -> None:
    dns = FakeDNS({"feeds.example.org": ["93.184.215.14", "127.0.0.1"]})
    with Fetcher(LIMITS, resolver=dns) as fetcher:
        error = refused(fetcher, f"http://feeds.example.org:{server.port}/feed.xml")
    assert "loopback" in error.message
    assert server.connections == 0


def test_the_connection_goes_to_the_checked_address_with_the_name_kept_as_host(
    server: FeedServer,
) -> None:
    # Allowed (an intranet): the name resolves once, through our resolver, and the socket
    # goes to that address. The system resolver does not know this name at all, so a
    # second lookup by the connection would have failed the fetch.
    dns = FakeDNS({"intranet.example.org": ["127.0.0.1"]})
    with Fetcher(LIMITS, resolver=dns, allow_private=True) as fetcher:
        result = fetcher.fetch(f"http://intranet.example.org:{server.port}/feed.xml")
    assert result.body == BODY
    assert dns.lookups == ["intranet.example.org"]
    assert server.requests[0].host == f"intranet.example.org:{server.port}"


def test_each_redirect_hop_is_resolved_through_the_guard(server: FeedServer) -> None:
    # Allowed here so that both hops connect; the refusal at a hop is the next test.
    dns = FakeDNS({"old.example.org": ["127.0.0.1"], "new.example.org": ["127.0.0.1"]})
    server.redirect("/moved.xml", f"http://new.example.org:{server.port}/feed.xml", 301)
    with Fetcher(LIMITS, resolver=dns, allow_private=True) as fetcher:
        result = fetcher.fetch(f"http://old.example.org:{server.port}/moved.xml")
    assert result.body == BODY
    assert dns.lookups == ["old.example.org", "new.example.org"]
    assert [r.host.split(":")[0] for r in server.requests] == [
        "old.example.org", "new.example.org"]


def test_a_redirect_to_loopback_is_refused_at_the_hop(server: FeedServer) -> None:
    import httpx

    hops: list[str] = []

    def public_site(request: httpx.Request) -> httpx.Response:
        hops.append(str(request.url))
        return httpx.Response(301, headers={
            "Location": f"http://sneaky.example.org:{server.port}/feed.xml"})

    dns = FakeDNS({"public.example.org": ["93.184.215.14"],
                   "sneaky.example.org": ["127.0.0.1"]})
    with Fetcher(LIMITS, resolver=dns, transport=httpx.MockTransport(public_site)) as fetcher:
        error = refused(fetcher, "http://public.example.org/feed.xml")
    assert hops == ["http://public.example.org/feed.xml"]
    assert error.url == "http://public.example.org/feed.xml"
    assert "sneaky.example.org (127.0.0.1): a loopback address" in error.message
    assert server.connections == 0


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("2130706433", "loopback"),  # decimal 127.0.0.1
        ("0x7f000001", "loopback"),  # hex
        ("0x7f.0.0.1", "loopback"),
        ("0177.0.0.1", "loopback"),  # octal
        ("127.1", "loopback"),  # short form
        ("[::ffff:127.0.0.1]", "loopback"),  # IPv4-mapped IPv6
        ("[::ffff:7f00:1]", "loopback"),
        ("[::1]", "loopback"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("0251.0376.0251.0376", "link-local"),  # octal metadata address
        ("100.64.0.1", "non-public"),  # CGNAT
        ("[fd00::1]", "private"),
        ("0.0.0.0", "unspecified"),
    ],
)
def test_every_spelling_of_a_non_public_address_is_refused_unconnected(
    server: FeedServer, host: str, kind: str
) -> None:
    dns = FakeDNS({})
    with Fetcher(LIMITS, resolver=dns) as fetcher:
        error = refused(fetcher, f"http://{host}:{server.port}/feed.xml")
    assert "refusing" in error.message
    assert kind in error.message or "private" in error.message
    assert dns.lookups == [], "an address literal is never looked up"
    assert server.connections == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "only http and https URLs are fetched"),
        ("ftp://127.0.0.1/feed.xml", "only http and https URLs are fetched"),
        ("http://user:secret@feeds.example.org/feed.xml", "credentials in the URL"),
        ("http://:80/feed.xml", "the URL has no host"),
    ],
)
def test_other_schemes_and_credentials_are_refused_before_any_lookup(
    url: str, message: str
) -> None:
    dns = FakeDNS({"feeds.example.org": ["93.184.215.14"]})
    with Fetcher(LIMITS, resolver=dns) as fetcher:
        error = refused(fetcher, url)
    assert message in error.message
    assert dns.lookups == []


def test_a_name_that_does_not_resolve_is_a_clear_error() -> None:
    with Fetcher(LIMITS, resolver=FakeDNS({})) as fetcher:
        error = refused(fetcher, "http://nowhere.example.org/feed.xml")
    assert error.message == "could not resolve host nowhere.example.org"
