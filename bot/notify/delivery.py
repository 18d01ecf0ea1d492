"""The delivery loop: drain the outbox through one sender.

The outbox is the source of truth. A row is claimed (pending → sending, committed) before it
is posted, and recorded (sent with its ts, failed with the reason, or pending again with the
next attempt time) after. A row found in ``sending`` when the loop starts was mid-flight when
a process died: with a bot token, the loop first looks for its own message in the channel
(message metadata carries the row id; a thread reply is looked for in its thread) and records
that instead of posting again. An update (``chat.update``) is simply made again: editing a
message twice leaves it as editing it once.

Flood control: in one pass (``deliver_due``, run after each poll cycle) a channel gets at
most ``flood_cap`` top-level alerts, the most severe first; the rest are folded into one
summary message that lists them, and each is recorded as delivered with it. Thread replies
and updates are not counted: they do not reach the channel's main view. While a cycle runs,
``deliver_sure`` posts the alerts that such a pass would post whatever else the cycle brings
(the most severe level a channel's rules can raise, oldest first, within the cap); the
closing pass is given their count (``posted``), so the cycle's cap and order hold.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot import metrics
from bot.errors import DeliveryError
from bot.messages import Message, Reply, Summary, Update
from bot.model import Alert
from bot.notify import Sender, Sent
from bot.store import Store

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=10)
RETRY_CAP = timedelta(minutes=15)
FIND_SLACK = 300  # seconds before a row's creation that a search for its message starts


@dataclass
class DeliveryReport:
    sent: int = 0  # alerts delivered: on their own or listed in a summary
    summarised: int = 0  # of which listed in a summary
    summaries: int = 0
    replies: int = 0
    updates: int = 0
    retrying: int = 0
    failed: int = 0
    reconciled: int = 0
    errors: list[str] = field(default_factory=list)


def _kind(message: Message) -> str:
    if isinstance(message, Reply):
        return "reply"
    if isinstance(message, Update):
        return "update"
    if isinstance(message, Summary):
        return "summary"
    return "alert"


@dataclass
class Deliverer:
    store: Store
    sender: Sender
    clock: Callable[[], datetime]
    sleep: Callable[[float], None]
    pace: float = 1.0  # seconds between two posts to one channel (Slack: about 1 msg/s)
    batch: int = 50
    flood_cap: int = 10  # top-level alerts per channel per pass; 0 turns flood control off
    rng: Callable[[], float] = random.random
    # None: this process is the only deliverer (SQLite), so every `sending` row at start-up
    # is abandoned. With replicas (PostgreSQL), a row is abandoned once its claim is older
    # than this lease; a batch of posts always finishes well within it.
    claim_lease: timedelta | None = None
    _last_post: dict[str, datetime] = field(default_factory=dict)

    def recover(self) -> DeliveryReport:
        """Settle rows left in ``sending`` by a process that died mid-post."""
        report = DeliveryReport()
        before = None if self.claim_lease is None else self.clock() - self.claim_lease
        for message in self.store.in_flight_alerts(claimed_before=before):
            found = None if isinstance(message, Update) else self._find(message)
            now = self.clock()
            if found is not None and found.ts is not None:
                self.store.mark_sent(message.id, ts=found.ts, now=now, channel=found.channel)
                report.reconciled += 1
                log.info("delivery %s=%d reconciled ts=%s", _kind(message), message.id,
                         found.ts)
            else:
                self.store.mark_retry(message.id, at=now, error="interrupted; posting again")
        return report

    def _find(self, message: Message) -> Sent | None:
        finder = getattr(self.sender, "find", None)
        if finder is None:
            return None
        created = message.created_at
        oldest = created.timestamp() - FIND_SLACK if created is not None else None
        try:
            found = finder(message, oldest)
        except DeliveryError as exc:
            log.warning("delivery %s=%d could not check channel history: %s", _kind(message),
                        message.id, exc)
            return None
        return found if isinstance(found, Sent) else None

    def deliver_sure(self, top: Mapping[str, int], posted: dict[str, int], *,
                     stop: Callable[[], bool] = lambda: False) -> DeliveryReport:
        """Post, before a poll cycle ends, the top-level alerts that flood control posts
        whatever the rest of the cycle brings (``Store.sure_alerts``: the most severe level
        a channel's rules can raise, oldest first, within the cap). ``top`` ranks each
        channel's most severe rule; ``posted`` counts the cycle's top-level alerts per
        channel and is shared with the cycle's closing ``deliver_due``, so that a channel
        still gets at most ``flood_cap`` in the cycle, the most severe first."""
        report = DeliveryReport()
        room = None if self.flood_cap <= 0 else {
            channel: max(self.flood_cap - posted.get(channel, 0), 0) for channel in top}
        sure = self.store.sure_alerts(self.clock(), top, room)
        if not sure or stop():
            return report
        self._deliver_claimed(self.store.claim_alerts(self.clock(), limit=len(sure), only=sure),
                              report, posted, stop)
        return report

    def deliver_due(self, *, wait: float = 0.0, stop: Callable[[], bool] = lambda: False,
                    posted: dict[str, int] | None = None) -> DeliveryReport:
        """Post every due message: one pass. With ``wait`` > 0, also wait (up to that many
        seconds from now) for retries that fall due, e.g. a 429's Retry-After. ``posted``:
        top-level alerts already posted per channel in this pass (by ``deliver_sure``)."""
        report = DeliveryReport()
        posted = {} if posted is None else posted  # top-level alerts per channel, this pass
        deadline = self.clock() + timedelta(seconds=wait)
        while not stop():
            if self.flood_cap > 0:
                for summary_id in self.store.fold_flood(self.clock(), self.flood_cap, posted):
                    log.info("delivery flood control: summary=%d", summary_id)
            claimed = self.store.claim_alerts(self.clock(), limit=self.batch)
            self._deliver_claimed(claimed, report, posted, stop)
            if claimed:
                continue
            due = self.store.next_alert_due()
            if due is None or due > deadline:
                break
            self.sleep(max((due - self.clock()).total_seconds(), 0.0))
        return report

    def _deliver_claimed(self, claimed: list[Message], report: DeliveryReport,
                         posted: dict[str, int], stop: Callable[[], bool]) -> None:
        """Post claimed rows in order, counting top-level alerts per channel in ``posted``;
        after ``stop``, the rest go back to pending, due at once."""
        for message in claimed:
            if stop():
                self.store.mark_retry(message.id, at=self.clock(),
                                       error="paused; posted on the next pass")
                continue
            if self._deliver_one(message, report) and type(message) is Alert:
                posted[message.channel] = posted.get(message.channel, 0) + 1

    def _deliver_one(self, message: Message, report: DeliveryReport) -> bool:
        kind = _kind(message)
        self._pace(message.channel)
        try:
            sent = self.sender.send(message)
        except DeliveryError as exc:
            now = self.clock()
            if exc.permanent:
                metrics.ALERTS.labels("failed").inc()
                self.store.mark_failed(message.id, error=exc.message, now=now)
                report.failed += 1 + (len(message.alerts) if isinstance(message, Summary) else 0)
                report.errors.append(str(exc))
                log.error("delivery %s=%d channel=%s failed: %s", kind, message.id,
                          message.channel, exc.message,
                          extra=_bound(message, kind, "failed", error=exc.message))
                return False
            at = now + self._retry_delay(message, exc)
            metrics.ALERTS.labels("retry").inc()
            self.store.mark_retry(message.id, at=at, error=exc.message)
            report.retrying += 1
            log.warning("delivery %s=%d channel=%s retry at %s: %s", kind, message.id,
                        message.channel, at.isoformat(timespec="seconds"), exc.message,
                        extra=_bound(message, kind, "retry", error=exc.message))
            return False
        now = self.clock()
        if sent.note is None:
            self._last_post[message.channel] = now
        self.store.mark_sent(message.id, ts=sent.ts, now=now, channel=sent.channel,
                             note=sent.note)
        _observe_sent(message, now)
        if isinstance(message, Summary):
            report.summaries += 1
            report.summarised += len(message.alerts)
            report.sent += len(message.alerts)
        elif isinstance(message, Reply):
            report.replies += 1
        elif isinstance(message, Update):
            report.updates += 1
        else:
            report.sent += 1
        if sent.note is not None:
            log.info("delivery %s=%d channel=%s not posted: %s", kind, message.id,
                     message.channel, sent.note)
        else:
            log.info("delivery %s=%d channel=%s sent ts=%s", kind, message.id,
                     message.channel, sent.ts, extra=_bound(message, kind, "sent", ts=sent.ts))
        return True

    def _retry_delay(self, message: Message, exc: DeliveryError) -> timedelta:
        if exc.retry_after is not None:
            return timedelta(seconds=exc.retry_after)
        # Exponential with jitter, from the attempt count the claim recorded.
        attempts = self.store.alert_attempts(message.id)
        delay: timedelta = min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_CAP)
        return delay / 2 + (delay / 2) * self.rng()

    def _pace(self, channel: str) -> None:
        last = self._last_post.get(channel)
        if last is None or self.pace <= 0:
            return
        gap = self.pace - (self.clock() - last).total_seconds()
        if gap > 0:
            self.sleep(gap)


def _observe_sent(message: Message, now: datetime) -> None:
    """Metrics: alerts sent, and the time from the entry first seen (the alert row was written
    in the same transaction) to Slack accepting it."""
    alerts = message.alerts if isinstance(message, Summary) else (
        (message,) if isinstance(message, Alert) else ())
    for alert in alerts:
        metrics.ALERTS.labels("sent").inc()
        if alert.created_at is not None:
            metrics.DELIVERY_LATENCY.observe(max((now - alert.created_at).total_seconds(), 0))


def _bound(message: Message, kind: str, outcome: str, **more: object) -> dict[str, object]:
    """Fields bound to a delivery's log event (JSON logs carry them as keys)."""
    return {"event": "delivery", "kind": kind, "alert": message.id,
            "channel": message.channel, "outcome": outcome, **more}
