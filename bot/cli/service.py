"""The service commands: ``run``, ``poll``, ``status``, ``demo`` and ``db upgrade``."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from datetime import timedelta
from typing import Annotated, Any

import typer

from bot import __version__
from bot.app import open_app, utc_now
from bot.cli.common import Verbose, err, escape_markup, fail, guarded, out, settings_or_exit
from bot.config import Settings
from bot.errors import ConfigError
from bot.feedinfo import health_of
from bot.rules import native
from bot.summary import print_cycle

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


def run(
    http: Annotated[str | None, typer.Option(
        "--http", metavar="HOST:PORT",
        help="Serve /healthz and /metrics here, e.g. 127.0.0.1:9108 (off by default).")] = None,
    web: Annotated[str | None, typer.Option(
        "--web", metavar="HOST:PORT",
        help="Also serve the analysts' web console here, e.g. 127.0.0.1:8080 (off by "
             "default; see `policybot web --help`).")] = None,
    verbose: Verbose = False,
) -> None:
    """Run the service: poll feeds on their intervals, deliver alerts, reload changed rules.

    Stops cleanly on Ctrl-C or SIGTERM: running work finishes or is left pending. A second
    Ctrl-C or SIGTERM stops at once; what was running is picked up again at the next start.
    """
    from bot.runlock import single_runner
    from bot.scheduler import run_service

    settings = settings_or_exit(verbose)
    stop = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            # As safe as a crash, which the outbox and the claims are built for: a feed half
            # stored rolls back and is polled again, an alert half sent is reconciled.
            logging.getLogger("bot").warning(
                "received %s again: stopping now, without waiting for running work", name)
            logging.shutdown()
            os._exit(128 + signum)
        logging.getLogger("bot").info("received %s", name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)

    def body() -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(single_runner(settings.database_url))
            bot = stack.enter_context(open_app(settings, console=out))
            _print_startup(bot.settings, len(bot.rules().rules))
            if web is not None:
                from bot.web.server import serving_in_thread

                console = stack.enter_context(serving_in_thread(settings, web, rules=bot.rules))
                err.print(f"web console on {console.url}", highlight=False)
            run_service(bot, stop, http=http)

    guarded(body)


def _print_startup(settings: Settings, n_rules: int) -> None:
    mode = settings.delivery_mode
    where = {"slack": "Slack (bot token)", "webhook": "Slack (incoming webhook)",
             "console": "this terminal (set SLACK_BOT_TOKEN to post to Slack)"}[mode]
    err.print(f"policybot {__version__}: {n_rules} rules from {settings.rules_dir}/, "
              f"alerts to {where}", highlight=False, soft_wrap=True)
    if native.compiled() is None:  # say so: matching is then about five times slower
        why = ("POLICYBOT_NATIVE=0" if native.available() else
               "bot/rules/_speedups.c was not built: reinstall with a C compiler at hand")
        err.print(f"rule matching in Python ({why})", highlight=False, soft_wrap=True)


def poll(
    feed: Annotated[str | None, typer.Option(
        "--feed", help="Poll only this feed (its URL or name).")] = None,
    verbose: Verbose = False,
) -> None:
    """Poll now, whatever the schedule, then deliver; print a summary.

    Skips feeds that a server told to wait (Retry-After) and feeds that are gone. Exits 0
    when the cycle ran, even if some feeds failed (their errors are in the table).
    """
    settings = settings_or_exit(verbose, default_level="WARNING")

    def body() -> None:
        with open_app(settings, console=out) as bot:
            bot.deliverer.recover()
            if feed is not None and not any(
                feed in (f.url, f.name, f.declared_url) for f in bot.store.list_feeds()
            ):
                fail(f"--feed: no feed with URL or name {feed!r} in "
                     f"{settings.rules_dir / 'feeds.yaml'}")
            outcomes = bot.poller.cycle(force=True, url=feed)
            if bot.ops is not None:
                bot.ops.announce()
            report = bot.deliverer.deliver_due(wait=60.0)
            pending = bot.store.alert_counts()["pending"]
            print_cycle(out, outcomes, report.sent, pending, report.failed)

    guarded(body)


@db_app.command("upgrade")
def db_upgrade(verbose: Verbose = False) -> None:
    """Upgrade the database schema to the latest migration (Alembic head)."""
    from bot.store import make_engine, upgrade
    from bot.store.db import current_revision

    settings = settings_or_exit(verbose)

    def body() -> None:
        engine = make_engine(settings.database_url)
        try:
            upgrade(engine)
            out.print(f"database at revision {current_revision(engine)}")
        except Exception as exc:  # SQLAlchemy/Alembic operational failures
            from sqlalchemy.exc import SQLAlchemyError

            if isinstance(exc, SQLAlchemyError):
                fail(f"POLICYBOT_DATABASE_URL: {type(exc).__name__}: {getattr(exc, 'orig', exc)}")
            raise
        finally:
            engine.dispose()

    guarded(body)


def status(verbose: Verbose = False) -> None:
    """Health at a glance: database, rules, feeds, alerts waiting or failed."""
    from bot.rules import load_rules
    from bot.store import make_engine
    from bot.store.db import current_revision, head_revision
    from bot.store.repo import Store

    settings = settings_or_exit(verbose, default_level="WARNING")

    def body() -> None:
        problems = 0
        engine = make_engine(settings.database_url)
        try:
            revision = current_revision(engine)
            head = head_revision()
            if revision != head:
                problems += 1
                out.print(f"[red]database[/] at {revision or 'no schema'}, latest is {head}: "
                          "run `policybot db upgrade`")
                return
            out.print(f"[green]database[/] {engine.url.render_as_string(hide_password=True)} "
                      f"at revision {revision}")
            try:
                rules = load_rules(settings.rules_dir)
                enabled = sum(1 for r in rules.rules if r.enabled)
                out.print(f"[green]rules[/] {enabled} enabled of {len(rules.rules)} in "
                          f"{settings.rules_dir}/")
            except ConfigError as exc:
                problems += 1
                out.print("[red]rules[/] invalid (the running bot keeps its last good rules):")
                out.print(escape_markup(str(exc)), highlight=False)
            store = Store(engine)
            now = utc_now()
            feeds = store.list_feeds()
            stale_after = timedelta(hours=settings.stale_after_hours)
            healths = [(f, health_of(f, now, stale_after)) for f in feeds]
            health: dict[str, int] = {}
            for _, h in healths:
                health[h.state] = health.get(h.state, 0) + 1
            summary = ", ".join(f"{n} {h}" for h, n in sorted(health.items())) or "none yet"
            colour = "red" if set(health) & {"failing", "stale", "gone", "silent"} else "green"
            out.print(f"[{colour}]feeds[/] {summary}")
            for f, h in healths:
                if h.state in ("failing", "stale", "gone", "silent"):
                    # Stale, silent and gone need a person; a fresh failure may pass.
                    problems += 1 if h.bad else 0
                    why = f.last_error or h.reason if h.state != "silent" else h.reason
                    out.print(escape_markup(f"  {f.name} [{h.state}]: {why or h.state} "
                                            f"({f.consecutive_failures} failures)"),
                              highlight=False)
            counts = store.alert_counts()
            colour = "red" if counts["failed"] else "green"
            out.print(f"[{colour}]alerts[/] {counts['pending']} pending, {counts['sending']} "
                      f"sending, {counts['sent']} sent, {counts['failed']} failed "
                      f"(delivery: {settings.delivery_mode})")
            for alert in store.failed_alerts():
                problems += 1
                out.print(f"  #{alert.id} to {alert.channel}: {escape_markup(alert.error or '')} — "
                          f"{escape_markup(alert.title[:80])}", highlight=False)
            if counts["failed"]:
                out.print("  fix the channel or token, then `policybot alerts retry --failed`")
            from bot.cli.digest import print_digest_status

            problems += print_digest_status(out, engine, settings, None)
        finally:
            engine.dispose()
        if problems:
            raise typer.Exit(1)

    guarded(body)


def demo(verbose: Verbose = False) -> None:
    """See policybot work in seconds: sample feeds on loopback, one cycle, alerts printed.

    Offline and without Slack: the bundled feeds (English and Japanese) are served on
    127.0.0.1, matched against the rules in POLICYBOT_RULES_DIR, and stored in a temporary
    database that is deleted afterwards.
    """
    from bot.demo_run import run_demo

    settings = settings_or_exit(verbose, default_level="WARNING")
    guarded(lambda: run_demo(settings, out))
