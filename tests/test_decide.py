"""Pure decisions: triage, schedules, backoff, Retry-After, backfill, the alert plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.decide import (
    BACKOFF_CAP,
    RuleRoute,
    backoff,
    in_backfill,
    next_poll,
    plan_alerts,
    retry_after,
    storable_key,
    triage,
)
from bot.model import AlertRule, Entry, Hit, Match, RuleStatus, Severity

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def entry(key: str, h: str = "h", published: datetime | None = None) -> Entry:
    return Entry(key=key, title=key, content_hash=h, published=published)


def test_triage_splits_new_changed_and_unchanged() -> None:
    found = triage([entry("a"), entry("b", "h2"), entry("c")], {"b": (7, "h1"), "c": (8, "h")})
    assert [e.key for e in found.new] == ["a"]
    assert [(i, e.key) for i, e in found.changed] == [(7, "b")]
    assert found.unchanged == 1


def test_long_keys_are_hashed_deterministically() -> None:
    long = entry("x" * 600)
    assert storable_key(long).key == storable_key(long).key
    assert storable_key(long).key.startswith("sha256:")
    assert storable_key(entry("short")).key == "short"


def test_next_poll_is_the_interval_plus_bounded_jitter() -> None:
    interval = timedelta(minutes=30)
    assert next_poll(NOW, interval, rng=lambda: 0.0) == NOW + interval
    assert next_poll(NOW, interval, rng=lambda: 1.0) == NOW + interval * 1.1


@pytest.mark.parametrize("failures", [1, 2, 3, 6, 20])
def test_backoff_grows_and_is_capped(failures: int) -> None:
    interval = timedelta(minutes=30)
    low = backoff(NOW, failures, interval, rng=lambda: 0.0) - NOW
    high = backoff(NOW, failures, interval, rng=lambda: 1.0) - NOW
    expected = min(interval * 2 ** (failures - 1), BACKOFF_CAP)
    assert (low, high) == (expected / 2, expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", NOW + timedelta(seconds=120)),
        ("Wed, 25 Nov 2026 11:00:00 GMT", NOW + timedelta(hours=2)),
        ("Wed, 25 Nov 2026 08:00:00 GMT", NOW),  # in the past: now
        ("99999999", NOW + timedelta(days=7)),  # capped
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_in_seconds_or_http_date(value: str | None,
                                             expected: datetime | None) -> None:
    assert retry_after(value, NOW) == expected


def test_backfill_holds_back_old_and_undated_entries_on_the_first_poll_only() -> None:
    window = timedelta(hours=24)
    old = entry("old", published=NOW - timedelta(days=2))
    recent = entry("recent", published=NOW - timedelta(hours=1))
    assert in_backfill(old, first_poll=True, now=NOW, window=window)
    assert in_backfill(entry("undated"), first_poll=True, now=NOW, window=window)
    assert not in_backfill(recent, first_poll=True, now=NOW, window=window)
    assert not in_backfill(old, first_poll=False, now=NOW, window=window)


def route(rule_id: str, severity: Severity = Severity.HIGH, channels: tuple[str, ...] = ("#a",),
          status: RuleStatus = RuleStatus.STABLE) -> RuleRoute:
    return RuleRoute(AlertRule(rule_id, rule_id.upper(), severity, "v1"), status, channels)


def test_one_alert_per_channel_naming_every_rule_most_severe_first() -> None:
    routes = {"gcap": route("gcap", Severity.MEDIUM, ("#a", "#b")),
              "osa": route("osa", Severity.CRITICAL, ("#a",))}
    hit = Hit("title", 0, 4, "GCAP")
    plans = plan_alerts(entry("e"), [Match("gcap", "v1", (hit,)), Match("osa", "v1")], routes)
    by_channel = {p.channel: [r.id for r in p.rules] for p in plans}
    assert by_channel == {"#a": ["osa", "gcap"], "#b": ["gcap"]}


def test_experimental_and_low_severity_rules_never_reach_slack() -> None:
    routes = {"exp": route("exp", status=RuleStatus.EXPERIMENTAL),
              "low": route("low", Severity.LOW)}
    assert plan_alerts(entry("e"), [Match("exp", "v1"), Match("low", "v1")], routes) == []


def test_a_changed_entry_alerts_only_for_rules_that_newly_match() -> None:
    routes = {"gcap": route("gcap"), "osa": route("osa")}
    found = [Match("gcap", "v1"), Match("osa", "v1")]
    (plan,) = plan_alerts(entry("e"), found, routes, already=["gcap"])
    assert [r.id for r in plan.rules] == ["osa"]
