"""Exactly once with a bot token: a crash between Slack accepting a message and the bot
recording it never makes a second copy — for alerts, thread replies, summaries and updates,
with an injected crash, and with a real SIGKILL of `policybot run`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, FakeClock
from fakeslack import FakeSlack
from feedserver import FeedServer, Item, atom
from test_cli import read_until

from bot.messages import Duplicate
from bot.model import AlertRule, Entry, FeedSource, Hit, Severity
from bot.notify import SlackBotSender
from bot.notify.delivery import Deliverer
from bot.plan import PlannedReply, PlannedUpdate
from bot.store import AlertWrite, EntryWrite, PollWrite, Store

RULE = AlertRule("gcap", "GCAP — the treaty and the programme", Severity.HIGH, "0123456789abcdef")
CHANNEL = "#japan-defence"


class Crash(Exception):
    """The process dies here."""


def deliverer(store: Store, fake: FakeSlack, clock: FakeClock, cap: int = 10) -> Deliverer:
    sender = SlackBotSender(fake.token, base_url=fake.base_url, timeout=5)
    return Deliverer(store=store, sender=sender, clock=clock, sleep=clock.sleep, flood_cap=cap)


def feed(store: Store, clock: FakeClock, name: str = "uk-mod") -> int:
    store.sync_feeds([FeedSource(name, f"https://example.org/{name}.atom")], clock())
    (state,) = store.feeds_to_poll(clock(), force=True, url=name)
    return state.id


def alerts(store: Store, clock: FakeClock, n: int, feed_id: int, prefix: str = "e") -> None:
    entries = [Entry(key=f"{prefix}{i}", title=f"GCAP treaty update {prefix}{i}",
                     content_hash=f"h{prefix}{i}", link=f"https://example.org/{prefix}{i}")
               for i in range(n)]
    store.save_poll(PollWrite(
        feed_id=feed_id, now=clock(), entries=tuple(EntryWrite(e, None, ()) for e in entries),
        alerts=tuple(AlertWrite(e.key, CHANNEL, (RULE,), (Hit("title", 0, 4, "GCAP"),))
                     for e in entries)))


def crash_on_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack accepts the post; the process dies before the outbox records it."""

    def die(*args: Any, **kwargs: Any) -> None:
        raise Crash("killed between Slack's answer and the commit")

    monkeypatch.setattr(Store, "mark_sent", die)


def ids_in_slack(fake: FakeSlack) -> list[int]:
    return sorted(p.metadata["event_payload"]["alert_id"] for p in fake.posts if p.metadata)


@pytest.fixture
def slack(fake_slack: FakeSlack) -> FakeSlack:
    fake_slack.set_channels({CHANNEL: "C0JDEFENCE"})
    return fake_slack


def test_an_alert_accepted_before_a_crash_is_recorded_not_posted_again(
    store: Store, slack: FakeSlack, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts(store, clock, 3, feed(store, clock))
    with monkeypatch.context() as patch:
        crash_on_record(patch)
        with pytest.raises(Crash):
            deliverer(store, slack, clock).deliver_due()
    assert ids_in_slack(slack) == [1], "Slack has the first alert; the outbox says sending"
    assert store.alert_counts()["sending"] == 3

    restarted = deliverer(store, slack, clock)
    assert restarted.recover().reconciled == 1
    assert restarted.deliver_due().sent == 2
    assert ids_in_slack(slack) == [1, 2, 3], "every alert in the channel exactly once"
    assert store.alert_counts()["sent"] == 3


def test_a_thread_reply_accepted_before_a_crash_is_found_in_its_thread(
    store: Store, slack: FakeSlack, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts(store, clock, 1, feed(store, clock))
    deliverer(store, slack, clock).deliver_due()
    other = feed(store, clock, "defence-news")
    entry = Entry(key="dn-1", title="GCAP treaty update e0", content_hash="x",
                  link="https://defensenews.com/gcap")
    store.save_poll(PollWrite(
        feed_id=other, now=clock(), entries=(EntryWrite(entry, None, ()),),
        replies=(PlannedReply("dn-1", CHANNEL, 1, None, (RULE,),
                              duplicate=Duplicate("title", True, "uk-mod")),),
        updates=(PlannedUpdate(1, CHANNEL, 2),)))
    with monkeypatch.context() as patch:
        crash_on_record(patch)
        with pytest.raises(Crash):
            deliverer(store, slack, clock).deliver_due()
    (alert,) = slack.top_level()
    assert len(slack.thread(alert.ts)) == 1

    restarted = deliverer(store, slack, clock)
    assert restarted.recover().reconciled == 1
    report = restarted.deliver_due()
    assert (report.replies, report.updates) == (0, 1)
    assert len(slack.thread(alert.ts)) == 1, "the reply is in the thread exactly once"
    assert len(slack.top_level()) == 1
    assert "Confirmed by 2 independent sources" in str(slack.top_level()[0].blocks)
    assert slack.calls("conversations.replies"), "replies are looked for in their thread"


def test_an_update_interrupted_is_simply_made_again(
    store: Store, slack: FakeSlack, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts(store, clock, 1, feed(store, clock))
    deliverer(store, slack, clock).deliver_due()
    store.save_poll(PollWrite(feed_id=feed(store, clock, "defence-news"), now=clock(),
                              updates=(PlannedUpdate(1, CHANNEL, 2),)))
    with monkeypatch.context() as patch:
        crash_on_record(patch)
        with pytest.raises(Crash):
            deliverer(store, slack, clock).deliver_due()
    restarted = deliverer(store, slack, clock)
    assert restarted.recover().reconciled == 0
    assert restarted.deliver_due().updates == 1
    assert len(slack.updates) == 2 and len(slack.posts) == 1, "one message, edited twice"


def test_a_summary_accepted_before_a_crash_is_found_and_its_alerts_recorded(
    store: Store, slack: FakeSlack, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts(store, clock, 5, feed(store, clock))
    real = Store.mark_sent

    def die_on_summary(self: Store, alert_id: int, **kwargs: Any) -> None:
        if alert_id == 6:  # the summary row comes after the five alerts
            raise Crash("killed after Slack accepted the summary")
        real(self, alert_id, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Store, "mark_sent", die_on_summary)
        with pytest.raises(Crash):
            deliverer(store, slack, clock, cap=2).deliver_due()
    assert len(slack.top_level()) == 3
    restarted = deliverer(store, slack, clock, cap=2)
    assert restarted.recover().reconciled == 1
    assert restarted.deliver_due().sent == 0
    assert len(slack.top_level()) == 3, "two alerts and one summary of three, once each"
    assert store.alert_counts()["sent"] == 6


# --- a real SIGKILL ------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, db_url: str, slack: FakeSlack, feed_server: FeedServer
        ) -> dict[str, str]:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "feeds.yaml").write_text(
        f"feeds:\n  - {{name: uk-mod, url: 'http://{feed_server.netloc}/mod.atom'}}\n")
    when = datetime.now(UTC) - timedelta(hours=1)  # the subprocess runs on the real clock
    feed_server.serve("/mod.atom", atom([
        Item(title="Japan to provide OSA radars to the Philippines", guid="osa-1",
             link="https://example.org/osa-1", published=when,
             description="<p>Official Security Assistance for coastal surveillance.</p>"),
        Item(title="UK, Japan and Italy sign the GCAP treaty", guid="gcap-1",
             link="https://example.org/gcap-1", published=when),
    ]), content_type="application/atom+xml")
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("POLICYBOT_", "SLACK_")) and "proxy" not in k.lower()}
    return clean | {
        "POLICYBOT_DATABASE_URL": db_url, "POLICYBOT_RULES_DIR": str(rules),
        "POLICYBOT_ALLOW_PRIVATE_ADDRESSES": "true", "SLACK_BOT_TOKEN": slack.token,
        "POLICYBOT_SLACK_API_URL": slack.base_url, "POLICYBOT_SLACK_CHANNEL": CHANNEL,
        # PostgreSQL allows replicas, so a claim is only taken over once its lease expires;
        # a short lease keeps the restart quick.
        "POLICYBOT_CLAIM_LEASE_SECONDS": "1",
    }


def test_sigkill_mid_post_then_restart_leaves_every_alert_in_the_channel_once(
    env: dict[str, str], slack: FakeSlack
) -> None:
    hold = slack.hold_next("chat.postMessage")
    with subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as first:
        try:
            assert hold.wait_held(60), "the bot never posted"
            # Slack has accepted and recorded the alert; its answer has not left. Kill -9.
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=60) == -signal.SIGKILL
        finally:
            hold.release()
            if first.poll() is None:
                first.kill()
    assert ids_in_slack(slack) == [1]

    with subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as second:
        try:
            log = read_until(second.stderr,
                             lambda line: "delivery alert=2" in line and "sent" in line)
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0
        finally:
            if second.poll() is None:
                second.kill()
    assert "delivery alert=1 reconciled" in log
    assert ids_in_slack(slack) == [1, 2], "each alert in the channel exactly once"
