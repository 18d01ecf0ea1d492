"""Pure decisions for one poll: which entries are new or changed, when to poll next, how long
to back off, and which alerts to write. Values in, values out; the clock is a parameter."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from bot.model import AlertRule, Entry, Hit, Match, RuleStatus, Severity

MAX_KEY_LENGTH = 500
BACKOFF_BASE = timedelta(minutes=5)
BACKOFF_CAP = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Triage:
    new: tuple[Entry, ...]
    changed: tuple[tuple[int, Entry], ...]  # (stored entry id, new value)
    unchanged: int


@dataclass(frozen=True, slots=True)
class RuleRoute:
    """What the alert planner needs to know about a rule."""

    rule: AlertRule
    status: RuleStatus
    channels: tuple[str, ...]

    @property
    def posts(self) -> bool:
        """Whether its matches reach Slack: experimental and low-severity rules go to the
        digest only."""
        return self.status is not RuleStatus.EXPERIMENTAL and self.rule.severity is not Severity.LOW


@dataclass(frozen=True, slots=True)
class PlannedAlert:
    entry_key: str
    channel: str
    rules: tuple[AlertRule, ...]
    hits: tuple[Hit, ...]


def storable_key(entry: Entry) -> Entry:
    """Keys longer than the column are replaced by their hash, deterministically."""
    if len(entry.key) <= MAX_KEY_LENGTH:
        return entry
    digest = hashlib.sha256(entry.key.encode("utf-8")).hexdigest()
    return replace(entry, key=f"sha256:{digest}")


def triage(parsed: Sequence[Entry], stored: Mapping[str, tuple[int, str]]) -> Triage:
    """Split parsed entries by what the store holds (key → (entry id, content hash))."""
    new: list[Entry] = []
    changed: list[tuple[int, Entry]] = []
    unchanged = 0
    for entry in parsed:
        known = stored.get(entry.key)
        if known is None:
            new.append(entry)
        elif known[1] != entry.content_hash:
            changed.append((known[0], entry))
        else:
            unchanged += 1
    return Triage(tuple(new), tuple(changed), unchanged)


def next_poll(now: datetime, interval: timedelta, *, rng: Callable[[], float] = random.random,
              jitter: float = 0.1) -> datetime:
    """The next poll after a success: the feed's interval, plus up to ``jitter`` of it so that
    feeds added together spread out instead of hitting publishers in bursts."""
    return now + interval + interval * (jitter * rng())


def backoff(now: datetime, failures: int, interval: timedelta, *,
            rng: Callable[[], float] = random.random) -> datetime:
    """After ``failures`` consecutive failures (≥ 1): exponential from the feed's interval
    (at least 5 minutes), full jitter on the upper half, capped at 24 h."""
    base = max(interval, BACKOFF_BASE)
    # The exponent is bounded first: timedelta overflows near 2**30 days.
    delay: timedelta = min(base * (2 ** min(max(failures - 1, 0), 16)), BACKOFF_CAP)
    return now + delay / 2 + (delay / 2) * rng()


MAX_RETRY_AFTER = timedelta(days=7)


def retry_after(value: str | None, now: datetime) -> datetime | None:
    """When a ``Retry-After`` header (RFC 9110 §10.2.3: seconds or an HTTP-date) lets us
    try again; None when absent or unreadable. Capped at 7 days from ``now``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        when = now + timedelta(seconds=int(value))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is always GMT
            when = when.replace(tzinfo=UTC)
    return min(max(when, now), now + MAX_RETRY_AFTER)


def in_backfill(entry: Entry, *, first_poll: bool, now: datetime, window: timedelta) -> bool:
    """On a feed's first successful poll, entries older than the window (or undated, since
    their age is unknown) are the back catalogue: stored and matched, never alerted."""
    if not first_poll:
        return False
    when = entry.published or entry.updated
    return when is None or when < now - window


def plan_alerts(
    entry: Entry,
    found: Iterable[Match],
    routes: Mapping[str, RuleRoute],
    *,
    already: Iterable[str] = (),
) -> list[PlannedAlert]:
    """One alert per (entry, channel) naming every rule that matched there.

    Experimental rules and low-severity rules go to the digest only. ``already`` holds the
    rule ids that matched this entry before (for a changed entry): only rules that are new
    matches produce an alert.
    """
    before = set(already)
    by_channel: dict[str, list[tuple[AlertRule, Match]]] = {}
    for match in found:
        route = routes.get(match.rule_id)
        if route is None or match.rule_id in before:
            continue
        if not route.posts:
            continue
        for channel in route.channels:
            by_channel.setdefault(channel, []).append((route.rule, match))
    planned = []
    for channel, pairs in by_channel.items():
        pairs.sort(key=lambda p: (-p[0].severity.rank, p[0].id))
        hits = tuple(dict.fromkeys(h for _, m in pairs for h in m.hits))
        planned.append(PlannedAlert(entry.key, channel, tuple(r for r, _ in pairs), hits))
    return planned
