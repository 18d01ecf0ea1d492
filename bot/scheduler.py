"""APScheduler 3 wiring for ``policybot run``: poll due feeds, drain the outbox, reload rules.

Jobs hold no state of their own: due feeds and pending alerts are derived from the database
each time, so a restart loses nothing and polls nothing early. Each job coalesces missed runs
and never overlaps itself (``max_instances=1``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from bot.app import App

log = logging.getLogger(__name__)

POLL_EVERY_SECONDS = 30
DELIVER_EVERY_SECONDS = 5


class Service:
    """The jobs of ``policybot run``; tests call the job methods directly."""

    def __init__(self, app: App, stop: threading.Event) -> None:
        self.app = app
        self.stop = stop
        self.wake_delivery: Callable[[], None] = self.deliver_job

    def poll_job(self) -> None:
        self.app.rules.refresh()
        self.app.feeds.refresh()
        outcomes = self.app.poller.cycle(stop=self.stop)
        if outcomes:
            failed = sum(1 for o in outcomes if o.result == "failed")
            log.info("cycle polled=%d failed=%d", len(outcomes), failed)
        if any(o.alerts for o in outcomes):
            self.wake_delivery()

    def deliver_job(self) -> None:
        self.app.deliverer.deliver_due(stop=self.stop.is_set)


def run_service(app: App, stop: threading.Event) -> None:
    """Run until ``stop`` is set (SIGINT/SIGTERM); in-flight jobs finish before returning."""
    service = Service(app, stop)
    app.deliverer.recover()
    scheduler = BackgroundScheduler(timezone=UTC, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 60,
    })
    now = datetime.now(UTC)
    scheduler.add_job(service.poll_job, "interval", seconds=POLL_EVERY_SECONDS,
                      id="poll", next_run_time=now)
    scheduler.add_job(service.deliver_job, "interval", seconds=DELIVER_EVERY_SECONDS,
                      id="deliver")
    deliver = scheduler.get_job("deliver")
    # New alerts go out now rather than at the next tick, without two delivery loops at once.
    service.wake_delivery = lambda: deliver.modify(next_run_time=datetime.now(UTC))
    scheduler.start()
    log.info("policybot running: polling every %ss; Ctrl-C to stop", POLL_EVERY_SECONDS)
    try:
        stop.wait()
    finally:
        log.info("stopping: letting running jobs finish")
        scheduler.shutdown(wait=True)
        log.info("stopped")
