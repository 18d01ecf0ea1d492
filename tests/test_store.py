"""The repository on SQLite and PostgreSQL: the same behaviour on both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.model import AlertRule, Entry, FeedSource, Hit, Match, Severity
from bot.store import AlertWrite, EntryWrite, FeedUpdate, PollWrite, Store

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
RULE = AlertRule("gcap", "GCAP treaty", Severity.HIGH, "abc123")


def source(name: str = "uk-mod", url: str = "https://example.org/mod.atom") -> FeedSource:
    return FeedSource(name=name, url=url, tags=("uk",), language="en")


def entry(key: str = "urn:1", title: str = "GCAP treaty signed", **kw: object) -> Entry:
    return Entry(key=key, title=title, content_hash=f"h-{key}-{title}", **kw)  # type: ignore[arg-type]


def poll_write(feed_id: int, *entries: Entry, etag: str | None = '"v1"') -> PollWrite:
    return PollWrite(
        feed_id=feed_id, now=NOW,
        entries=tuple(EntryWrite(e, None, (Match("gcap", "abc123", (Hit("title", 0, 4, "GCAP"),)),))
                      for e in entries),
        alerts=tuple(AlertWrite(e.key, "#desk", (RULE,), (Hit("title", 0, 4, "GCAP"),))
                     for e in entries),
        feed=FeedUpdate(polled_at=NOW, next_poll_at=NOW + timedelta(minutes=30), status=200,
                        etag=etag, last_modified="Wed, 25 Nov 2026 08:00:00 GMT"),
    )


def test_sync_adds_updates_and_retires_feeds_keeping_history(store: Store) -> None:
    report = store.sync_feeds([source(), source("jp-mod", "https://example.jp/news.xml")], NOW)
    assert report.added == ("uk-mod", "jp-mod")
    (mod,) = [f for f in store.list_feeds() if f.name == "uk-mod"]
    store.save_poll(poll_write(mod.id, entry()))

    report = store.sync_feeds([source(url="https://example.org/moved.atom")], NOW)
    assert report.updated == ("uk-mod",)
    assert report.removed == ("jp-mod",)
    feeds = {f.name: f for f in store.list_feeds()}
    assert feeds["uk-mod"].url == "https://example.org/moved.atom"
    assert feeds["uk-mod"].etag is None, "a new URL must not reuse the old server's validators"
    assert feeds["uk-mod"].entry_count == 1
    assert feeds["jp-mod"].removed
    assert [f.name for f in store.feeds_to_poll(NOW, force=True)] == ["uk-mod"]


def test_due_feeds_are_leased_so_a_second_claim_gets_none(store: Store) -> None:
    store.sync_feeds([source()], NOW)
    assert len(store.feeds_to_poll(NOW)) == 1
    assert store.feeds_to_poll(NOW) == []
    assert store.feeds_to_poll(NOW + timedelta(minutes=11)) != [], "an expired lease is taken over"


def test_force_skips_feeds_told_to_wait_and_gone_feeds(store: Store) -> None:
    store.sync_feeds([source(), source("b", "https://b.example/feed")], NOW)
    a, b = store.feeds_to_poll(NOW)
    store.record_feed(a.id, FeedUpdate(polled_at=NOW, next_poll_at=NOW + timedelta(hours=1),
                                       status=429, success=False, error="HTTP 429",
                                       retry_after_until=NOW + timedelta(hours=1)))
    store.record_feed(b.id, FeedUpdate(polled_at=NOW, next_poll_at=NOW + timedelta(minutes=30),
                                       status=200))
    assert [f.name for f in store.feeds_to_poll(NOW, force=True)] == ["b"]
    store.release_feed(b.id)
    assert store.feeds_to_poll(NOW) == [], "nothing is due before next_poll_at"


def test_save_poll_writes_entries_matches_alerts_and_state_together(store: Store) -> None:
    store.sync_feeds([source()], NOW)
    (feed,) = store.feeds_to_poll(NOW)
    saved = store.save_poll(poll_write(feed.id, entry("a"), entry("b")))
    assert (saved.new_entries, saved.alerts) == (2, 2)
    (state,) = store.list_feeds()
    assert state.etag == '"v1"'
    assert state.last_modified == "Wed, 25 Nov 2026 08:00:00 GMT"
    assert state.first_success_at == NOW
    assert store.alert_counts()["pending"] == 2


def test_inserts_are_idempotent(store: Store) -> None:
    store.sync_feeds([source()], NOW)
    (feed,) = store.feeds_to_poll(NOW)
    store.save_poll(poll_write(feed.id, entry("a")))
    again = store.save_poll(poll_write(feed.id, entry("a")))
    assert (again.new_entries, again.alerts) == (0, 0)
    assert store.entry_count() == 1
    assert store.alert_counts()["pending"] == 1


def test_a_304_keeps_validators_unless_new_ones_arrive(store: Store) -> None:
    store.sync_feeds([source()], NOW)
    (feed,) = store.feeds_to_poll(NOW)
    store.save_poll(poll_write(feed.id, entry("a")))
    store.record_feed(feed.id, FeedUpdate(polled_at=NOW, next_poll_at=NOW, status=304))
    assert store.list_feeds()[0].etag == '"v1"'
    store.record_feed(feed.id, FeedUpdate(polled_at=NOW, next_poll_at=NOW, status=304,
                                          etag='"v2"'))
    assert store.list_feeds()[0].etag == '"v2"'


def test_failures_count_up_and_a_success_resets_them(store: Store) -> None:
    store.sync_feeds([source()], NOW)
    (feed,) = store.feeds_to_poll(NOW)
    for _ in range(3):
        store.record_feed(feed.id, FeedUpdate(polled_at=NOW, next_poll_at=NOW, status=500,
                                              success=False, error="HTTP 500",
                                              error_kind="fetch"))
    state = store.list_feeds()[0]
    assert (state.consecutive_failures, state.last_error, state.last_status) == (3, "HTTP 500",
                                                                                500)
    assert state.last_success_at is None
    store.record_feed(feed.id, FeedUpdate(polled_at=NOW, next_poll_at=NOW, status=200))
    state = store.list_feeds()[0]
    assert (state.consecutive_failures, state.last_error) == (0, None)


def test_alert_lifecycle_pending_sending_sent_or_failed(store: Store) -> None:
    store.sync_feeds([source()], NOW)
    (feed,) = store.feeds_to_poll(NOW)
    store.save_poll(poll_write(feed.id, entry("a", link="https://example.org/a"), entry("b")))
    first, second = store.claim_alerts(NOW)
    assert first.entry.link == "https://example.org/a"
    assert first.rules == (RULE,)
    assert first.hits == (Hit("title", 0, 4, "GCAP"),)
    assert first.feed_name == "uk-mod"
    assert store.claim_alerts(NOW) == [], "claimed rows are not claimed twice"
    assert [a.id for a in store.in_flight_alerts()] == [first.id, second.id]
    store.mark_sent(first.id, ts="1700000000.000100", now=NOW)
    store.mark_failed(second.id, error="channel_not_found", now=NOW)
    counts = store.alert_counts()
    assert (counts["sent"], counts["failed"], counts["sending"]) == (1, 1, 0)
    assert store.failed_alerts()[0].error == "channel_not_found"
    assert store.requeue_failed(NOW) == 1
    assert [a.id for a in store.claim_alerts(NOW)] == [second.id]
    assert store.alert_attempts(second.id) == 2


def test_a_retry_waits_until_its_time(store: Store) -> None:
    store.sync_feeds([source()], NOW)
    (feed,) = store.feeds_to_poll(NOW)
    store.save_poll(poll_write(feed.id, entry("a")))
    (alert,) = store.claim_alerts(NOW)
    store.mark_retry(alert.id, at=NOW + timedelta(seconds=30), error="rate limited")
    assert store.claim_alerts(NOW + timedelta(seconds=29)) == []
    assert store.next_alert_due() == NOW + timedelta(seconds=30)
    assert len(store.claim_alerts(NOW + timedelta(seconds=30))) == 1


def test_a_changed_entry_updates_in_place_and_drops_stale_matches(store: Store) -> None:
    store.sync_feeds([source()], NOW)
    (feed,) = store.feeds_to_poll(NOW)
    store.save_poll(poll_write(feed.id, entry("a")))
    stored = store.stored_entries(feed.id, ["a", "zzz"])
    assert list(stored) == ["a"]
    changed = entry("a", title="Tempest update")
    saved = store.save_poll(PollWrite(feed_id=feed.id, now=NOW,
                                      entries=(EntryWrite(changed, stored["a"].id, ()),)))
    assert saved.changed_entries == 1
    assert store.stored_entries(feed.id, ["a"])["a"].content_hash == changed.content_hash
    assert store.match_rule_ids_for(stored["a"].id) == []


def test_feeds_are_claimed_in_batches_and_not_twice_in_one_cycle(store: Store) -> None:
    store.sync_feeds([source(f"f{i}", f"https://example.org/{i}") for i in range(5)], NOW)
    first = store.feeds_to_poll(NOW, force=True, limit=2, polled_before=NOW)
    assert len(first) == 2
    for feed in first:
        store.record_feed(feed.id, FeedUpdate(polled_at=NOW, next_poll_at=NOW, status=304))
    rest = store.feeds_to_poll(NOW, force=True, limit=10, polled_before=NOW)
    assert sorted(f.name for f in first + rest) == ["f0", "f1", "f2", "f3", "f4"]
    assert {f.name for f in first}.isdisjoint(f.name for f in rest)
