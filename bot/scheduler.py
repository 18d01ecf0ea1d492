"""APScheduler 3 wiring for ``policybot run``: poll due feeds, drain the outbox, reload rules.

Jobs hold no state of their own: due feeds and pending alerts are derived from the database
each time, so a restart loses nothing and polls nothing early. Each job coalesces missed runs
and never overlaps itself (``max_instances=1``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from bot.app import App
from bot.errors import ConfigError, StorageError
from bot.httpd import serving
from bot.metrics import REGISTRY, StateCollector
from bot.store.retention import prune_entry_text

log = logging.getLogger(__name__)

DELIVER_EVERY_SECONDS = 5
# How often the main thread wakes while it waits (for a stop, then for running jobs to
# finish). Python runs a signal handler on the main thread, but the kernel may deliver
# SIGTERM to any thread (the web console's event loop, a fetch worker); the main thread
# then sleeps on in an untimed wait and never runs the handler. A timed wait wakes it to
# run the handler within this delay.
_STOP_CHECK_SECONDS = 0.5


class Service:
    """The jobs of ``policybot run``; tests call the job methods directly."""

    def __init__(self, app: App, stop: threading.Event) -> None:
        self.app = app
        self.stop = stop
        # A poll cycle's alerts go out in one delivery pass at its end, so that flood
        # control (max_alerts_per_cycle) counts per cycle — but for those no later alert
        # can displace, posted while it runs (_EarlyDelivery); the periodic delivery job
        # (for retries) stands aside while a cycle runs. One delivery loop at a time.
        self._cycle_running = threading.Event()
        self._delivering = threading.Lock()

    def poll_job(self) -> None:
        self.app.rules.refresh()
        self.app.feeds.refresh()
        posted: dict[str, int] = {}  # the cycle's top-level alerts per channel
        self._cycle_running.set()
        with self._delivering:
            early = _EarlyDelivery(self.app, _top_ranks(self.app), posted, self.stop)
            self.app.poller.stored = early.wake
            try:
                outcomes = self.app.poller.cycle(stop=self.stop)
            finally:
                self.app.poller.stored = None
                early.finish()
                self._cycle_running.clear()
            if outcomes:
                failed = sum(1 for o in outcomes if o.result == "failed")
                log.info("cycle polled=%d failed=%d", len(outcomes), failed)
            if any(o.alerts or o.new or o.changed for o in outcomes):
                # New or changed entries may have written alerts, thread replies or updates.
                self.app.deliverer.deliver_due(stop=self.stop.is_set, posted=posted)
        if self.app.ops is not None:
            self.app.ops.announce()  # stale, silent, gone, recovered: once each

    def retention_job(self) -> int:
        """Prune entry text past the retention period (daily)."""
        pruned = prune_entry_text(self.app.store, now=self.app.clock(),
                                  keep=timedelta(days=self.app.settings.retention_days))
        if pruned:
            log.info("retention: pruned the text of %d entries older than %d days", pruned,
                     self.app.settings.retention_days)
        return pruned

    def deliver_job(self) -> None:
        """Retries, and posts left by others (replicas, `poll`), between poll cycles."""
        if self._cycle_running.is_set() or not self._delivering.acquire(blocking=False):
            return
        try:
            if self.app.deliverer.claim_lease is not None:
                self.app.deliverer.recover()  # take over a dead replica's posts
            self.app.deliverer.deliver_due(
                stop=lambda: self.stop.is_set() or self._cycle_running.is_set())
        finally:
            self._delivering.release()


def _top_ranks(app: App) -> dict[str, int]:
    """Each channel's most severe level that its rules in force can post (flood control's
    rank): the alerts of that level cannot be displaced by anything later in a cycle."""
    top: dict[str, int] = {}
    try:
        routes = app.poller.routing.routes(app.rules())
    except ConfigError:
        return top  # the cycle reports it; nothing is posted early
    for route in routes.values():
        if not route.posts:
            continue  # digest only
        for channel in route.channels:
            top[channel] = max(top.get(channel, 0), route.rule.severity.rank)
    return top


class _EarlyDelivery:
    """A poll cycle's alerts that flood control posts whatever the rest of the cycle brings
    (the most severe level, within the cap) go out while the cycle runs, on this thread,
    each time the poller commits (``Poller.stored``); the rest wait for the delivery pass at
    the cycle's end, which counts these against the cap (issue 7: a new item's alert no
    longer waits for a whole cycle of conditional GETs)."""

    def __init__(self, app: App, top: dict[str, int], posted: dict[str, int],
                 stop: threading.Event) -> None:
        self._app = app
        self._top = top
        self._posted = posted
        self._stop = stop
        self._woken = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="early-delivery", daemon=True)
        if top:
            self._thread.start()

    def wake(self) -> None:
        self._woken.set()

    def finish(self) -> None:
        """Let a pass in progress end, then stop (the cycle's closing pass follows)."""
        self._done = True
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            self._woken.wait()
            self._woken.clear()
            if self._done or self._stop.is_set():
                return
            try:
                self._app.deliverer.deliver_sure(
                    self._top, self._posted,
                    stop=lambda: self._done or self._stop.is_set())
            except Exception:  # the closing pass delivers whatever this one did not
                log.exception("early delivery failed; the cycle's delivery pass follows")


def health(app: App, scheduler: BackgroundScheduler) -> tuple[bool, dict[str, Any]]:
    """Healthy when the scheduler runs and the database answers; the body says why not."""
    checks: dict[str, Any] = {"scheduler": "running" if scheduler.running else "stopped"}
    try:
        app.store.ping()
        checks["database"] = "ok"
    except StorageError as exc:
        checks["database"] = str(exc)
    if app.rules.error:
        checks["rules"] = "invalid edit ignored; last good rules in force"
    return scheduler.running and checks["database"] == "ok", checks


def watch_state(app: App) -> None:
    """Expose the database's state (outbox depth, feed health) as gauges, read per scrape."""
    global _state_collector
    if _state_collector is not None:
        REGISTRY.unregister(_state_collector)

    def read() -> dict[str, dict[str, int]]:
        feeds: dict[str, int] = {}
        for feed in app.store.list_feeds():
            if feed.removed or not feed.enabled:
                continue
            kind = "gone" if feed.gone else "failing" if feed.consecutive_failures else "ok"
            feeds[kind] = feeds.get(kind, 0) + 1
        return {"outbox": dict(app.store.alert_counts().counts), "feeds": feeds}

    _state_collector = StateCollector(read)
    REGISTRY.register(_state_collector)


_state_collector: StateCollector | None = None


def run_service(app: App, stop: threading.Event, *, http: str | None = None) -> None:
    """Run until ``stop`` is set (SIGINT/SIGTERM); in-flight jobs finish before returning.

    With ``http`` (HOST:PORT), also serve /healthz and /metrics there.
    """
    service = Service(app, stop)
    app.deliverer.recover()
    scheduler = BackgroundScheduler(timezone=UTC, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 60,
    })
    now = datetime.now(UTC)
    tick = app.settings.poll_tick_seconds
    scheduler.add_job(service.poll_job, "interval", seconds=tick,
                      id="poll", next_run_time=now)
    scheduler.add_job(service.deliver_job, "interval", seconds=DELIVER_EVERY_SECONDS,
                      id="deliver")
    scheduler.add_job(service.retention_job, "interval", hours=24, id="retention",
                      next_run_time=now + timedelta(minutes=5))
    # Digests: a cron job per digest, plus a sweep for catch-up and retries (issue 6).
    from bot.digest.service import digest_service
    from bot.store.digests import DigestStore

    digest_service(app.settings, DigestStore(app.store.engine), app.rules,
                   app.clock).install(scheduler, now)
    scheduler.start()
    log.info("policybot running: looking for due feeds every %gs; Ctrl-C to stop", tick)
    try:
        with contextlib.ExitStack() as stack:
            if http is not None:
                watch_state(app)
                stack.enter_context(serving(http, lambda: health(app, scheduler)))
            while not stop.wait(_STOP_CHECK_SECONDS):
                pass
    finally:
        log.info("stopping: letting running jobs finish (Ctrl-C again to stop at once)")
        # On a thread, so that this one goes on running signal handlers (a second signal
        # stops at once: bot.cli.service) while jobs finish; see _STOP_CHECK_SECONDS.
        stopping = threading.Thread(target=scheduler.shutdown, kwargs={"wait": True},
                                    name="stopping")
        stopping.start()
        while stopping.is_alive():
            stopping.join(_STOP_CHECK_SECONDS)
        log.info("stopped")
