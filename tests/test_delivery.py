"""The delivery loop over the real outbox, the real slack_sdk client and a fake Slack server."""

from __future__ import annotations

from datetime import timedelta

from conftest import FakeClock
from fakeslack import FakeSlack

from bot.model import AlertRule, Entry, FeedSource, Hit, Severity
from bot.notify import SlackBotSender, WebhookSender
from bot.notify.delivery import Deliverer
from bot.store import AlertWrite, EntryWrite, PollWrite, Store

RULE = AlertRule("gcap", "GCAP — the treaty and the programme", Severity.HIGH, "0123456789abcdef")


def outbox(store: Store, clock: FakeClock, n: int = 1, channel: str = "#japan-defence") -> None:
    """``n`` pending alerts for ``n`` entries of one feed."""
    store.sync_feeds([FeedSource("uk-mod", "https://example.org/mod.atom")], clock())
    (feed,) = store.feeds_to_poll(clock(), force=True)
    entries = [Entry(key=f"e{i}", title=f"GCAP treaty update {i}", content_hash=f"h{i}",
                     link=f"https://example.org/{i}") for i in range(n)]
    store.save_poll(PollWrite(
        feed_id=feed.id, now=clock(),
        entries=tuple(EntryWrite(e, None, ()) for e in entries),
        alerts=tuple(AlertWrite(e.key, channel, (RULE,), (Hit("title", 0, 4, "GCAP"),))
                     for e in entries),
    ))


def deliverer(store: Store, fake: FakeSlack, clock: FakeClock, pace: float = 1.0) -> Deliverer:
    sender = SlackBotSender(fake.token, base_url=fake.base_url, timeout=5)
    return Deliverer(store=store, sender=sender, clock=clock, sleep=clock.sleep, pace=pace)


def test_every_pending_alert_is_posted_once_and_recorded(
    store: Store, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    outbox(store, clock, n=3)
    report = deliverer(store, fake_slack, clock).deliver_due()
    assert report.sent == 3
    assert len(fake_slack.posts) == 3
    assert sorted(p.metadata["event_payload"]["alert_id"] for p in fake_slack.posts) == [1, 2, 3]
    assert store.alert_counts()["sent"] == 3
    assert deliverer(store, fake_slack, clock).deliver_due().sent == 0
    assert len(fake_slack.posts) == 3


def test_posts_to_one_channel_are_paced(store: Store, fake_slack: FakeSlack,
                                        clock: FakeClock) -> None:
    outbox(store, clock, n=3)
    deliverer(store, fake_slack, clock, pace=1.0).deliver_due()
    assert clock.slept == [1.0, 1.0]


def test_a_429_waits_for_retry_after_then_posts_once(
    store: Store, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    outbox(store, clock)
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=7)
    start = clock()
    report = deliverer(store, fake_slack, clock).deliver_due(wait=60)
    assert (report.retrying, report.sent) == (1, 1)
    assert len(fake_slack.posts) == 1
    assert clock() - start >= timedelta(seconds=7)
    assert store.alert_counts()["sent"] == 1


def test_a_429_beyond_the_wait_stays_pending(store: Store, fake_slack: FakeSlack,
                                             clock: FakeClock) -> None:
    outbox(store, clock)
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=120)
    report = deliverer(store, fake_slack, clock).deliver_due(wait=60)
    assert (report.sent, len(fake_slack.posts)) == (0, 0)
    assert store.alert_counts()["pending"] == 1
    assert store.next_alert_due() == clock() + timedelta(seconds=120)


def test_server_errors_back_off_then_post_once(store: Store, fake_slack: FakeSlack,
                                               clock: FakeClock) -> None:
    outbox(store, clock)
    fake_slack.fail_next("chat.postMessage", status=500, times=2)
    report = deliverer(store, fake_slack, clock).deliver_due(wait=600)
    assert (report.retrying, report.sent) == (2, 1)
    assert len(fake_slack.posts) == 1
    assert all(s > 0 for s in clock.slept), "each retry waited"


def test_channel_not_found_fails_with_the_reason_and_stops(
    store: Store, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    outbox(store, clock)
    fake_slack.fail_next("chat.postMessage", error="channel_not_found")
    report = deliverer(store, fake_slack, clock).deliver_due(wait=600)
    assert (report.failed, report.sent) == (1, 0)
    (failed,) = store.failed_alerts()
    assert "channel_not_found" in (failed.error or "")
    assert fake_slack.token not in (failed.error or "")
    assert store.requeue_failed(clock()) == 1
    assert deliverer(store, fake_slack, clock).deliver_due().sent == 1


def test_an_alert_posted_before_a_crash_is_found_not_posted_again(
    store: Store, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    fake_slack.set_channels({"#japan-defence": "C0JDEFENCE"})
    outbox(store, clock, n=2)
    bot = deliverer(store, fake_slack, clock)
    first, second = store.claim_alerts(clock())
    # The process posted the first alert, then died before recording it; the second was
    # claimed but never posted.
    bot.sender.send(first)
    assert [a.id for a in store.in_flight_alerts()] == [first.id, second.id]

    restarted = deliverer(store, fake_slack, clock)
    assert restarted.recover().reconciled == 1
    assert restarted.deliver_due().sent == 1
    ids = [p.metadata["event_payload"]["alert_id"] for p in fake_slack.posts]
    assert sorted(ids) == [first.id, second.id], "each alert in the channel exactly once"
    assert store.alert_counts()["sent"] == 2


def test_webhook_delivery_posts_and_records(store: Store, fake_slack: FakeSlack,
                                            clock: FakeClock) -> None:
    outbox(store, clock, n=2, channel="webhook")
    sender = WebhookSender(fake_slack.webhook_url, timeout=5)
    loop = Deliverer(store=store, sender=sender, clock=clock, sleep=clock.sleep)
    assert loop.deliver_due().sent == 2
    assert [p.via for p in fake_slack.posts] == ["webhook", "webhook"]


def test_retry_makes_waiting_alerts_due_now_and_with_failed_requeues_failed_ones(
    store: Store, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    outbox(store, clock, n=2)
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=600)
    fake_slack.fail_next("chat.postMessage", error="not_in_channel")
    deliverer(store, fake_slack, clock).deliver_due()
    assert (store.alert_counts()["pending"], store.alert_counts()["failed"]) == (1, 1)
    assert store.requeue(clock()) == 1, "the one waiting out Retry-After"
    assert store.next_alert_due() == clock()
    assert store.alert_counts()["failed"] == 1
    assert store.requeue(clock(), failed=True) == 1
    assert deliverer(store, fake_slack, clock).deliver_due().sent == 2


def test_with_replicas_only_claims_older_than_the_lease_are_taken_over(
    store: Store, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    outbox(store, clock)
    (claimed,) = store.claim_alerts(clock())  # a live replica is posting this one
    other = deliverer(store, fake_slack, clock)
    other.claim_lease = timedelta(minutes=5)
    other.recover()
    assert [m.id for m in store.in_flight_alerts()] == [claimed.id], "left to its owner"
    assert other.deliver_due().sent == 0
    clock.advance(minutes=6)  # the owner died: its claim expired
    other.recover()
    assert store.in_flight_alerts() == []
    assert other.deliver_due().sent == 1
    assert len(fake_slack.posts) == 1
