"""Claim a (digest, period), build it, mail it, record what happened. One unit of work per
call, returning what it did, so tests call it without a scheduler.

    claim (row committed) | read the period | build_digest | render | SMTP | mark sent

A period is sent at most once unasked: its row is claimed before the mail goes out and
marked sent after the server's 250. A transient failure is retried with backoff until the
digest's grace runs out; a permanent one is recorded (``status`` shows it). A send
interrupted by a crash is never repeated automatically (the server may have accepted it):
it is marked failed and ``digest send NAME --period P --force`` sends it again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.digest.build import Digest, build_digest, included_rules
from bot.digest.config import DigestConfig
from bot.digest.mail import Mailer, MailError
from bot.digest.render import compose
from bot.digest.schedule import Period, due_periods
from bot.rules import RuleSet
from bot.store.digests import RETRY, DigestStore, SendRecord

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=1)
LEASE = timedelta(minutes=10)
INTERRUPTED = ("interrupted while sending: the server may or may not have accepted it; "
               "`policybot digest send {digest} --period {period} --force` sends it again")


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What one send did: sent | skipped (empty) | already (sent, failed, in flight or a retry
    not yet due) | retry | failed."""

    digest: str
    period: Period
    result: str
    items: int = 0
    recipients: tuple[str, ...] = ()
    error: str | None = None
    retry_at: datetime | None = None
    record: SendRecord | None = None


def retry_delay(attempts: int, rng: Callable[[], float] = random.random) -> timedelta:
    """Exponential from one minute, capped at an hour, jittered over its upper half."""
    delay: timedelta = min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_CAP)
    return delay / 2 + (delay / 2) * rng()


def message_id(digest: str, period: Period, attempt: int, sender: str) -> str:
    domain = sender.rpartition("@")[2] or "policybot.invalid"
    return f"<digest.{digest}.{period.end:%Y%m%dT%H%MZ}.{attempt}@{domain}>"


@dataclass
class DigestRunner:
    store: DigestStore
    rules: Callable[[], RuleSet]
    mailer: Mailer | None
    sender: str
    clock: Callable[[], datetime]
    rng: Callable[[], float] = random.random

    def prepare(self, config: DigestConfig, period: Period) -> Digest:
        """Read the period from the store and build the digest (nothing is claimed)."""
        rules = self.rules()
        wanted = set(included_rules(config, rules))
        start, end = period.start, period.end
        return build_digest(
            config, rules, period, self.store.matches_between(start, end, wanted),
            first_mentions=self.store.first_mentions_between(start, end, wanted),
            seen_per_source=self.store.entries_per_source(start, end),
            failing=self.store.failing_feeds(start, end),
        )

    def send(self, config: DigestConfig, period: Period, *, force: bool = False,
             to: Sequence[str] = ()) -> SendOutcome:
        """Send one period. With ``to``, a copy goes to those addresses only and the period
        is not marked sent for the digest's recipients."""
        if self.mailer is None:
            raise MailError("SMTP is not configured (POLICYBOT_SMTP_HOST)", permanent=True)
        if to:
            digest = self.prepare(config, period)
            msg = compose(digest, sender=self.sender, recipients=to, date=self.clock(),
                          message_id=message_id(config.name, period, 0, self.sender)
                          .replace(".0@", f".copy{int(self.clock().timestamp())}@"))
            self.mailer.send(msg, to)
            return SendOutcome(config.name, period, "sent", digest.items, tuple(to))
        now = self.clock()
        claim = self.store.claim(config.name, period.start, period.end, now=now,
                                 recipients=config.recipients, lease=LEASE, force=force)
        if not claim.claimed:
            record = claim.record
            return SendOutcome(config.name, period, "already", record.items or 0,
                               record.recipients, record.error, record.next_attempt_at, record)
        record = claim.record
        try:
            digest = self.prepare(config, period)
        except Exception:
            self.store.mark_retry(record.id, at=now + retry_delay(record.attempts, self.rng),
                                  error="could not build the digest; see the log")
            raise
        if digest.empty and config.skip_empty and not force:
            self.store.mark_skipped(record.id, now=self.clock())
            log.info("digest=%s period=%s empty: skipped (skip_empty)", config.name, period.label)
            return SendOutcome(config.name, period, "skipped", 0, config.recipients)
        mid = message_id(config.name, period, record.attempts, self.sender)
        msg = compose(digest, sender=self.sender, recipients=config.recipients, message_id=mid,
                      date=self.clock())
        try:
            delivered = self.mailer.send(msg, config.recipients)
        except MailError as exc:
            return self._failed(config, period, record, exc)
        note = None
        if delivered.refused:
            note = "sent; refused: " + "; ".join(f"{a}: {r}" for a, r in
                                                 delivered.refused.items())
        self.store.mark_sent(record.id, now=self.clock(), items=digest.items, message_id=mid,
                             note=note)
        log.info("digest=%s period=%s sent items=%d to=%d", config.name, period.label,
                 digest.items, len(config.recipients) - len(delivered.refused))
        return SendOutcome(config.name, period, "sent", digest.items, config.recipients, note)

    def _failed(self, config: DigestConfig, period: Period, record: SendRecord,
                exc: MailError) -> SendOutcome:
        now = self.clock()
        deadline = period.end + config.grace
        at = now + retry_delay(record.attempts, self.rng)
        if exc.permanent or at > deadline:
            error = exc.message if exc.permanent else (
                f"gave up after {record.attempts} attempts (grace {config.grace}): {exc.message}")
            self.store.mark_failed(record.id, error=error)
            log.error("digest=%s period=%s failed: %s", config.name, period.label, error)
            return SendOutcome(config.name, period, "failed", error=error)
        self.store.mark_retry(record.id, at=at, error=exc.message)
        log.warning("digest=%s period=%s retry at %s: %s", config.name, period.label,
                    at.isoformat(timespec="seconds"), exc.message)
        return SendOutcome(config.name, period, "retry", error=exc.message, retry_at=at)

    def run_due(self, configs: Sequence[DigestConfig]) -> list[SendOutcome]:
        """Send every period that is due (on time, missed within the grace, or a retry whose
        time has come) and not yet claimed. What the scheduled jobs call."""
        now = self.clock()
        outcomes: list[SendOutcome] = []
        for config in configs:
            for stale in self.store.abandon_interrupted(config.name, now, "interrupted"):
                day = stale.period_end.astimezone(config.tz).date().isoformat()
                error = INTERRUPTED.format(digest=config.name, period=day)
                self.store.mark_failed(stale.id, error=error)
                log.error("digest=%s period=%s: %s", config.name, day, error)
            for period in due_periods(config, now):
                found = self.store.get(config.name, period.end)
                if found is not None and not (
                    found.status == RETRY and found.next_attempt_at is not None
                    and found.next_attempt_at <= now
                ):
                    continue
                outcomes.append(self.send(config, period))
        return outcomes
