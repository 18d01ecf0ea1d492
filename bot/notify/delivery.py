"""The delivery loop: drain the outbox through one sender.

The outbox is the source of truth. A row is claimed (pending → sending, committed) before it
is posted, and recorded (sent with its ts, failed with the reason, or pending again with the
next attempt time) after. A row found in ``sending`` when the loop starts was mid-flight when
a process died: with a bot token, the loop first looks for its own message in the channel
(message metadata carries the alert id) and records that instead of posting again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.errors import DeliveryError
from bot.model import Alert
from bot.notify import Sender
from bot.store import Store

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=10)
RETRY_CAP = timedelta(minutes=15)


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    reconciled: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Deliverer:
    store: Store
    sender: Sender
    clock: Callable[[], datetime]
    sleep: Callable[[float], None]
    pace: float = 1.0  # seconds between two posts to one channel (Slack: about 1 msg/s)
    batch: int = 50
    rng: Callable[[], float] = random.random
    _last_post: dict[str, datetime] = field(default_factory=dict)

    def recover(self) -> DeliveryReport:
        """Settle rows left in ``sending`` by a process that died mid-post."""
        report = DeliveryReport()
        for alert in self.store.in_flight_alerts():
            ts = self._find_posted(alert)
            now = self.clock()
            if ts is not None:
                self.store.mark_sent(alert.id, ts=ts, now=now)
                report.reconciled += 1
                log.info("delivery alert=%d reconciled ts=%s", alert.id, ts)
            else:
                self.store.mark_retry(alert.id, at=now, error="interrupted; posting again")
        return report

    def _find_posted(self, alert: Alert) -> str | None:
        finder = getattr(self.sender, "find_posted", None)
        if finder is None:
            return None
        oldest = alert.created_at.timestamp() - 300 if alert.created_at else None
        try:
            found = finder(alert.channel, alert.id, oldest=oldest)
        except DeliveryError as exc:
            log.warning("delivery alert=%d could not check channel history: %s", alert.id, exc)
            return None
        return found if isinstance(found, str) else None

    def deliver_due(self, *, wait: float = 0.0, stop: Callable[[], bool] = lambda: False
                    ) -> DeliveryReport:
        """Post every due alert. With ``wait`` > 0, also wait (up to that many seconds from
        now) for retries that fall due, e.g. a 429's Retry-After, before returning."""
        report = DeliveryReport()
        deadline = self.clock() + timedelta(seconds=wait)
        while not stop():
            claimed = self.store.claim_alerts(self.clock(), limit=self.batch)
            for alert in claimed:
                if stop():
                    self.store.mark_retry(alert.id, at=self.clock(), error="shutdown")
                    continue
                self._deliver_one(alert, report)
            if claimed:
                continue
            due = self.store.next_alert_due()
            if due is None or due > deadline:
                break
            self.sleep(max((due - self.clock()).total_seconds(), 0.0))
        return report

    def _deliver_one(self, alert: Alert, report: DeliveryReport) -> None:
        self._pace(alert.channel)
        try:
            sent = self.sender.send(alert)
        except DeliveryError as exc:
            now = self.clock()
            if exc.permanent:
                self.store.mark_failed(alert.id, error=exc.message, now=now)
                report.failed += 1
                report.errors.append(str(exc))
                log.error("delivery alert=%d channel=%s failed: %s", alert.id, alert.channel,
                          exc.message)
                return
            at = now + self._retry_delay(alert, exc)
            self.store.mark_retry(alert.id, at=at, error=exc.message)
            report.retrying += 1
            log.warning("delivery alert=%d channel=%s retry at %s: %s", alert.id,
                        alert.channel, at.isoformat(timespec="seconds"), exc.message)
            return
        now = self.clock()
        self._last_post[alert.channel] = now
        self.store.mark_sent(alert.id, ts=sent.ts, now=now, channel=sent.channel)
        report.sent += 1
        log.info("delivery alert=%d channel=%s sent ts=%s", alert.id, alert.channel, sent.ts)

    def _retry_delay(self, alert: Alert, exc: DeliveryError) -> timedelta:
        if exc.retry_after is not None:
            return timedelta(seconds=exc.retry_after)
        # Exponential with jitter, from the attempt count the claim recorded.
        attempts = self.store.alert_attempts(alert.id)
        delay: timedelta = min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_CAP)
        return delay / 2 + (delay / 2) * self.rng()

    def _pace(self, channel: str) -> None:
        last = self._last_post.get(channel)
        if last is None or self.pace <= 0:
            return
        gap = self.pace - (self.clock() - last).total_seconds()
        if gap > 0:
            self.sleep(gap)
