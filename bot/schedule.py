"""Pure scheduling and health decisions for feeds: when to poll next, how often, whether a
permanent redirect is adopted, and whether a feed needs a person. Values in, values out; the
clock is a parameter.

    next poll after a success = latest of (interval, Cache-Control max-age, Expires,
                                Retry-After), + jitter, capped at 7 days
    after a failure           = bot.decide.backoff (exponential, jitter, 24 h cap),
                                or Retry-After on 429/503
    health                    = ok | new | failing | stale | silent | gone | disabled | removed
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol

from bot.decide import retry_after

__all__ = [
    "ADAPTIVE_MAX",
    "BAD_HEALTH",
    "MAX_NEXT_POLL",
    "REDIRECT_POLLS",
    "SILENT_FACTOR",
    "HealthFacts",
    "Redirect",
    "assess",
    "effective_interval",
    "fresh_until",
    "next_poll_after",
    "publishing_rhythm",
    "track_redirect",
]

MAX_NEXT_POLL = timedelta(days=7)
# Adaptive polling never waits longer than this between polls, whatever the rhythm.
ADAPTIVE_MAX = timedelta(hours=6)
# A feed is "silent" when its newest item is older than this many of its usual gaps …
SILENT_FACTOR = 5
# … and never before this much time has passed (a feed publishing hourly may rest a night).
SILENT_MIN = timedelta(hours=48)
REDIRECT_POLLS = 3  # a 301/308 is adopted after this many consecutive polls saw it
# States that a person should hear about (ops channel, `status` exit code).
BAD_HEALTH = frozenset({"stale", "silent", "gone"})


def fresh_until(headers: Mapping[str, str], now: datetime) -> datetime | None:
    """How long the server says the response stays fresh (RFC 9111 §4.2.1), or None.

    ``Cache-Control: max-age`` (less ``Age``) wins over ``Expires``; ``no-cache`` and
    ``no-store`` mean no promise at all. ``Expires`` is read relative to the server's
    ``Date`` when present, so a server whose clock is off does not move our schedule.
    ``headers`` have lower-case names.
    """
    directives = _cache_control(headers.get("cache-control", ""))
    if "no-cache" in directives or "no-store" in directives:
        return None
    max_age = directives.get("max-age")
    if max_age is not None and max_age.isdigit():
        age = headers.get("age", "").strip()
        lifetime = int(max_age) - (int(age) if age.isdigit() else 0)
        return now + timedelta(seconds=max(lifetime, 0))
    expires = _http_date(headers.get("expires"))
    if expires is None:
        return None
    served = _http_date(headers.get("date"))
    return now + (expires - served) if served is not None else expires


def next_poll_after(
    now: datetime,
    interval: timedelta,
    headers: Mapping[str, str] | None = None,
    *,
    rng: Callable[[], float] = random.random,
    jitter: float = 0.1,
) -> datetime:
    """The next poll after an answer (200 or 304): the latest of the feed's interval, the
    server's freshness (:func:`fresh_until`) and its ``Retry-After``, plus up to ``jitter``
    of that delay (so feeds added together spread out), capped at 7 days."""
    headers = headers or {}
    candidates = [now + interval]
    for promised in (fresh_until(headers, now), retry_after(headers.get("retry-after"), now)):
        if promised is not None:
            candidates.append(promised)
    when = max(candidates)
    when += (when - now) * (jitter * rng())
    return min(when, now + MAX_NEXT_POLL)


def publishing_rhythm(dates: Iterable[datetime | None], *, now: datetime,
                      newest: int = 20) -> timedelta | None:
    """The feed's usual gap between items: the median gap between the ``newest`` distinct
    item dates not in the future. None with fewer than four dated items."""
    distinct = sorted({d for d in dates if d is not None and d <= now}, reverse=True)[:newest]
    if len(distinct) < 4:
        return None
    gaps = [a - b for a, b in zip(distinct, distinct[1:], strict=False)]
    return timedelta(seconds=statistics.median(g.total_seconds() for g in gaps))


def effective_interval(interval: timedelta, rhythm: timedelta | None, *,
                       adaptive: bool) -> timedelta:
    """How often a feed is polled. Adaptive: a quarter of its usual gap between items, never
    more often than its configured interval nor less often than every 6 hours."""
    if not adaptive or rhythm is None:
        return interval
    return max(interval, min(rhythm / 4, max(ADAPTIVE_MAX, interval)))


@dataclass(frozen=True, slots=True)
class Redirect:
    """A permanent redirect being watched: where to, and on how many polls in a row."""

    target: str | None
    polls: int
    adopt: bool = False


def track_redirect(stored_target: str | None, stored_polls: int,
                   seen: str | None) -> Redirect:
    """Count consecutive polls that were permanently redirected (301/308) to one target.

    ``seen`` is this poll's permanent target (None: no permanent redirect, which resets the
    count). ``adopt`` becomes True on the :data:`REDIRECT_POLLS`-th poll in a row.
    """
    if seen is None:
        return Redirect(None, 0)
    polls = stored_polls + 1 if seen == stored_target else 1
    return Redirect(seen, polls, adopt=polls >= REDIRECT_POLLS)


class HealthFacts(Protocol):
    """What :func:`assess` reads of a feed (``bot.store.FeedState`` has all of it)."""

    @property
    def enabled(self) -> bool: ...
    @property
    def removed(self) -> bool: ...
    @property
    def gone(self) -> bool: ...
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def failing_since(self) -> datetime | None: ...
    @property
    def last_success_at(self) -> datetime | None: ...
    @property
    def last_entry_at(self) -> datetime | None: ...
    @property
    def rhythm(self) -> timedelta | None: ...


@dataclass(frozen=True, slots=True)
class Health:
    state: str  # ok | new | failing | stale | silent | gone | disabled | removed
    reason: str = ""

    @property
    def bad(self) -> bool:
        return self.state in BAD_HEALTH


def assess(feed: HealthFacts, now: datetime, *, stale_after: timedelta) -> Health:
    """A feed's health, with a short reason for the bad states.

    - ``stale``: failing without a break for longer than ``stale_after``;
    - ``silent``: answering, but its newest item is older than five of its usual gaps
      between items (and at least 48 h), e.g. a feed that publishes daily and has published
      nothing for a week — a feed that died quietly or moved without a redirect.
    """
    if feed.removed:
        return Health("removed")
    if not feed.enabled:
        return Health("disabled")
    if feed.gone:
        return Health("gone", "the server answered 410 Gone; re-enable it in feeds.yaml")
    if feed.consecutive_failures:
        since = feed.failing_since
        if since is not None and now - since > stale_after:
            return Health("stale", f"failing for {_span(now - since)} "
                                   f"({feed.consecutive_failures} polls in a row)")
        return Health("failing")
    if feed.last_success_at is None:
        return Health("new")
    if feed.rhythm is not None and feed.last_entry_at is not None:
        quiet = now - feed.last_entry_at
        if quiet > max(feed.rhythm * SILENT_FACTOR, SILENT_MIN):
            return Health("silent", f"nothing new for {_span(quiet)}; it usually publishes "
                                    f"every {_span(feed.rhythm)}")
    return Health("ok")


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cache_control(value: str) -> dict[str, str | None]:
    directives: dict[str, str | None] = {}
    for part in value.split(","):
        name, sep, arg = part.strip().partition("=")
        if name:
            directives[name.strip().lower()] = arg.strip().strip('"') if sep else None
    return directives


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None  # "0", "-1" and other junk mean "already expired": no promise
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
