"""The digests inside ``policybot run``: one APScheduler cron job per digest, plus a sweep
every minute that catches up periods missed while the bot was down (within each digest's
grace), retries transient failures when due, and picks up edits to ``rules/digests.yaml``.

Both kinds of job call ``DigestRunner.run_due``; the claim row makes a period go out once
even when the two (or two replicas) run at the same moment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bot import metrics
from bot.config import Settings
from bot.digest.config import DigestConfig, load_digests
from bot.digest.job import DigestRunner, SendOutcome
from bot.digest.mail import SmtpMailer, SmtpSettings
from bot.digest.schedule import cron_trigger
from bot.errors import ConfigError
from bot.rules import RuleSet
from bot.store.digests import DigestStore

log = logging.getLogger(__name__)

SWEEP_EVERY_SECONDS = 60


def make_runner(settings: Settings, store: DigestStore, rules: Callable[[], RuleSet],
                clock: Callable[[], datetime]) -> DigestRunner:
    """A runner with the configured SMTP server; ConfigError when SMTP is not set up."""
    smtp = SmtpSettings.from_settings(settings)
    return DigestRunner(store=store, rules=rules, mailer=SmtpMailer(smtp), sender=smtp.sender,
                        clock=clock)


class DigestService:
    """Keeps ``digests.yaml`` current and runs due digests; thread-safe enough for two
    scheduler threads because every send is claimed in the database first."""

    def __init__(self, path: Path, runner: DigestRunner | None,
                 rules: Callable[[], RuleSet], smtp_error: str | None = None) -> None:
        self.path = path
        self.runner = runner
        self.rules = rules
        self.smtp_error = smtp_error
        self.digests: tuple[DigestConfig, ...] = ()
        self.error: str | None = None
        self._signature: tuple[int, int] | None = None
        self._scheduler: Any = None
        self._warned = False

    def refresh(self) -> bool:
        """Reload the file when it changed; an invalid edit keeps the last good digests."""
        try:
            stat = self.path.stat()
            signature: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            signature = None
        if signature == self._signature and self._signature is not None:
            return False
        self._signature = signature
        try:
            digests = load_digests(self.path, [r.id for r in self.rules().rules])
        except ConfigError as exc:
            self.error = str(exc)
            log.error("digests file invalid; keeping the digests as they were: %s", exc)
            return False
        self.error = None
        changed = digests != self.digests
        self.digests = digests
        if changed and self._scheduler is not None:
            self._install_cron_jobs()
        return changed

    def run_due(self, name: str | None = None) -> list[SendOutcome]:
        """The job: send what is due (of one digest, or all)."""
        if self.runner is None:
            if self.digests and not self._warned:
                self._warned = True  # once, not every minute; `status` keeps saying it
                log.warning("digests configured but not sent: %s", self.smtp_error)
            return []
        chosen = [d for d in self.digests if name is None or d.name == name]
        outcomes = self.runner.run_due(chosen)
        for outcome in outcomes:
            if outcome.result != "already":
                metrics.DIGEST_SENDS.labels(outcome.result).inc()
        return outcomes

    def sweep(self) -> list[SendOutcome]:
        self.refresh()
        return self.run_due()

    def install(self, scheduler: Any, now: datetime) -> None:
        """Add the sweep (first run at ``now``: catch up at once after a restart) and one
        cron job per digest to an APScheduler 3 scheduler."""
        self.refresh()
        self._scheduler = scheduler  # after the first load, which installs nothing yet
        scheduler.add_job(self.sweep, "interval", seconds=SWEEP_EVERY_SECONDS, id="digests",
                          next_run_time=now)
        self._install_cron_jobs()

    def _install_cron_jobs(self) -> None:
        scheduler = self._scheduler
        wanted = {f"digest:{d.name}": d for d in self.digests}
        for job in scheduler.get_jobs():
            if job.id.startswith("digest:") and job.id not in wanted:
                job.remove()
        for job_id, digest in wanted.items():
            scheduler.add_job(
                self.run_due, cron_trigger(digest.schedule, digest.timezone), args=[digest.name],
                id=job_id, replace_existing=True,
                misfire_grace_time=int(digest.grace.total_seconds()), coalesce=True)
        if wanted:
            log.info("digests scheduled: %s", ", ".join(
                f"{d.name} ({d.schedule}, {d.timezone})" for d in self.digests))


def digest_service(settings: Settings, store: DigestStore, rules: Callable[[], RuleSet],
                   clock: Callable[[], datetime]) -> DigestService:
    """The service for ``policybot run``; without SMTP settings it only reports."""
    try:
        runner: DigestRunner | None = make_runner(settings, store, rules, clock)
        smtp_error = None
    except ConfigError as exc:
        runner, smtp_error = None, str(exc)
    return DigestService(settings.rules_dir / "digests.yaml", runner, rules, smtp_error)
