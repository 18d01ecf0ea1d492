"""The ``policybot`` command line (Typer). Every command exits non-zero with a one-line
reason on bad input; ``policybot COMMAND --help`` documents each."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from bot import __version__
from bot.app import open_app, utc_now
from bot.config import Settings, load_settings
from bot.errors import BotError, ConfigError
from bot.logs import setup_logging
from bot.summary import print_cycle

app = typer.Typer(
    help="policybot: watch policy feeds, match them against YAML rules, alert Slack.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
feeds_app = typer.Typer(help="The feeds in rules/feeds.yaml and their health.",
                        no_args_is_help=True)
rules_app = typer.Typer(help="Validate and test the rules in rules/.", no_args_is_help=True)
alerts_app = typer.Typer(help="The alert outbox.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(feeds_app, name="feeds")
app.add_typer(rules_app, name="rules")
app.add_typer(alerts_app, name="alerts")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit(verbose: bool = False, default_level: str | None = None) -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        fail(str(exc), 2)
    level = "DEBUG" if verbose else default_level or settings.log_level
    secrets = [s.get_secret_value() for s in (settings.slack_bot_token,
               settings.slack_webhook_url, settings.smtp_password) if s is not None]
    setup_logging(level, settings.log_format, secrets)
    return settings


def guarded(func: Callable[[], T]) -> T:
    """Run a command body, turning policybot's own errors into one-line exits."""
    try:
        return func()
    except ConfigError as exc:
        fail(str(exc), 2)
    except BotError as exc:
        fail(str(exc))


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")]


@app.callback(invoke_without_command=True)
def main_callback(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"policybot {__version__}")
        raise typer.Exit()


# ----------------------------------------------------------------------------- run / poll


@app.command()
def run(verbose: Verbose = False) -> None:
    """Run the service: poll feeds on their intervals, deliver alerts, reload changed rules.

    Stops cleanly on Ctrl-C or SIGTERM: running work finishes or is left pending.
    """
    from bot.scheduler import run_service

    settings = settings_or_exit(verbose)
    stop = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        logging.getLogger("bot").info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)

    def body() -> None:
        with open_app(settings, console=out) as bot:
            _print_startup(bot.settings, bot.rules().rules.__len__())
            run_service(bot, stop)

    guarded(body)


def _print_startup(settings: Settings, n_rules: int) -> None:
    mode = settings.delivery_mode
    where = {"slack": "Slack (bot token)", "webhook": "Slack (incoming webhook)",
             "console": "this terminal (set SLACK_BOT_TOKEN to post to Slack)"}[mode]
    err.print(f"policybot {__version__}: {n_rules} rules from {settings.rules_dir}/, "
              f"alerts to {where}", highlight=False, soft_wrap=True)


@app.command()
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
                f.url == feed or f.name == feed for f in bot.store.list_feeds()
            ):
                fail(f"--feed: no feed with URL or name {feed!r} in "
                     f"{settings.rules_dir / 'feeds.yaml'}")
            outcomes = bot.poller.cycle(force=True, url=feed)
            report = bot.deliverer.deliver_due(wait=60.0)
            pending = bot.store.alert_counts()["pending"]
            print_cycle(out, outcomes, report.sent, pending, report.failed)

    guarded(body)


# ------------------------------------------------------------------------------------ db


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


# --------------------------------------------------------------------------------- feeds


def _feed_health(f: Any, now: datetime) -> str:
    if f.removed:
        return "removed"
    if not f.enabled:
        return "disabled"
    if f.gone:
        return "gone"
    if f.consecutive_failures:
        return "failing"
    if f.last_success_at is None:
        return "new"
    return "ok"


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    seconds = int((now - when).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            text = f"{seconds // size}{unit}"
            break
    else:
        text = f"{seconds}s"
    return f"in {text}" if future else f"{text} ago"


@feeds_app.command("list")
def feeds_list(
    failing: Annotated[
        bool, typer.Option("--failing", help="Only feeds that are failing or gone.")
    ] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = (
        OutputFormat.table),
    verbose: Verbose = False,
) -> None:
    """Show every feed: health, last success, last error, failures, next poll, entries."""
    settings = settings_or_exit(verbose, default_level="WARNING")

    def body() -> None:
        with open_app(settings) as bot:
            now = utc_now()
            feeds = bot.store.list_feeds()
            if failing:
                feeds = [f for f in feeds if _feed_health(f, now) in ("failing", "gone")]
            if fmt is OutputFormat.json:
                rows = [{
                    "name": f.name, "url": f.url, "health": _feed_health(f, now),
                    "interval_seconds": int(f.interval.total_seconds()),
                    "last_success_at": _iso(f.last_success_at), "last_error": f.last_error,
                    "last_status": f.last_status, "consecutive_failures": f.consecutive_failures,
                    "next_poll_at": _iso(f.next_poll_at), "entries": f.entry_count,
                    "tags": list(f.tags),
                } for f in feeds]
                out.print_json(json.dumps(rows, ensure_ascii=False))
                return
            table = Table(title=f"{len(feeds)} feeds", title_justify="left")
            for column in ("feed", "health", "last success", "failures", "next poll",
                           "entries", "last error"):
                table.add_column(column, overflow="fold")
            styles = {"ok": "green", "failing": "red", "gone": "red", "new": "yellow"}
            for f in feeds:
                health = _feed_health(f, now)
                table.add_row(
                    f.name, f"[{styles.get(health, 'dim')}]{health}[/]",
                    _ago(f.last_success_at, now), str(f.consecutive_failures),
                    _ago(f.next_poll_at, now), str(f.entry_count),
                    _escape(f.last_error or ""),
                )
            out.print(table)

    guarded(body)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# -------------------------------------------------------------------------------- status


@app.command()
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
                out.print(_escape(str(exc)), highlight=False)
            store = Store(engine)
            now = utc_now()
            feeds = store.list_feeds()
            health: dict[str, int] = {}
            for f in feeds:
                health[_feed_health(f, now)] = health.get(_feed_health(f, now), 0) + 1
            summary = ", ".join(f"{n} {h}" for h, n in sorted(health.items())) or "none yet"
            colour = "red" if health.get("failing") or health.get("gone") else "green"
            out.print(f"[{colour}]feeds[/] {summary}")
            for f in feeds:
                if _feed_health(f, now) in ("failing", "gone"):
                    out.print(f"  {f.name}: {_escape(f.last_error or 'gone')} "
                              f"({f.consecutive_failures} failures)", highlight=False)
            counts = store.alert_counts()
            colour = "red" if counts["failed"] else "green"
            out.print(f"[{colour}]alerts[/] {counts['pending']} pending, {counts['sending']} "
                      f"sending, {counts['sent']} sent, {counts['failed']} failed "
                      f"(delivery: {settings.delivery_mode})")
            for alert in store.failed_alerts():
                problems += 1
                out.print(f"  #{alert.id} to {alert.channel}: {_escape(alert.error or '')} — "
                          f"{_escape(alert.title[:80])}", highlight=False)
            if counts["failed"]:
                out.print("  fix the channel or token, then `policybot alerts retry --failed`")
        finally:
            engine.dispose()
        if problems:
            raise typer.Exit(1)

    guarded(body)


# -------------------------------------------------------------------------------- alerts


@alerts_app.command("retry")
def alerts_retry(
    failed: Annotated[bool, typer.Option("--failed", help="Requeue every failed alert.")] = False,
    verbose: Verbose = False,
) -> None:
    """Requeue failed alerts (after fixing the channel or token); `run` or `poll` sends them."""
    if not failed:
        fail("say which alerts: --failed", 2)
    settings = settings_or_exit(verbose, default_level="WARNING")

    def body() -> None:
        with open_app(settings) as bot:
            n = bot.store.requeue_failed(utc_now())
            out.print(f"{n} failed alerts requeued")

    guarded(body)


# --------------------------------------------------------------------------------- rules


@rules_app.command("check")
def rules_check(
    path: Annotated[
        Path | None, typer.Argument(help="Rules directory (default: POLICYBOT_RULES_DIR).")
    ] = None,
) -> None:
    """Validate every rule and list file; print file:line:col: message for each problem."""
    from bot.rules import RuleLoadError, load_rules

    settings = settings_or_exit(default_level="WARNING")
    directory = path or settings.rules_dir
    try:
        rules = load_rules(directory)
    except RuleLoadError as exc:
        for error in exc.errors:
            out.print(_escape(str(error)), highlight=False, soft_wrap=True)
        fail(f"{len(exc.errors)} error(s) in {directory}/")
    except ConfigError as exc:
        fail(str(exc), 1)
    out.print(f"{len(rules.rules)} rules OK in {directory}/")


@rules_app.command("test")
def rules_test(
    rule: Annotated[list[str] | None, typer.Argument(help="Rule ids (default: all).")] = None,
) -> None:
    """Run every rule's embedded examples; exit 1 on any failure (todo_* never fail)."""
    from bot.rules import run_examples

    settings = settings_or_exit(default_level="WARNING")

    def body() -> None:
        from bot.rules import load_rules

        rules = load_rules(settings.rules_dir)
        results = [r for r in run_examples(rules) if not rule or r.rule_id in rule]
        if rule:
            unknown = sorted(set(rule) - {r.id for r in rules.rules})
            if unknown:
                fail(f"no such rule: {', '.join(unknown)}")
        table = Table(title="Rule examples", title_justify="left")
        for column in ("rule", "passed", "failed", "todo"):
            table.add_column(column, justify="left" if column == "rule" else "right")
        by_rule: dict[str, list[Any]] = {}
        for r in results:
            by_rule.setdefault(r.rule_id, []).append(r)
        failures = []
        for rule_id, items in sorted(by_rule.items()):
            todo = [r for r in items if r.kind.startswith("todo")]
            real = [r for r in items if not r.kind.startswith("todo")]
            bad = [r for r in real if not r.passed]
            failures += bad
            table.add_row(rule_id, str(len(real) - len(bad)), str(len(bad)), str(len(todo)))
        out.print(table)
        for r in failures:
            title = getattr(r.example, "title", r.example)
            out.print(f"[red]FAIL[/] {r.rule_id} {r.kind}: {_escape(str(title))}"
                      f" — {_escape(str(getattr(r, 'reason', '')))}", highlight=False)
        if failures:
            raise typer.Exit(1)

    guarded(body)


# ---------------------------------------------------------------------------------- demo


@app.command()
def demo(verbose: Verbose = False) -> None:
    """See policybot work in seconds: sample feeds on loopback, one cycle, alerts printed.

    Offline and without Slack: the bundled feeds (English and Japanese) are served on
    127.0.0.1, matched against the rules in POLICYBOT_RULES_DIR, and stored in a temporary
    database that is deleted afterwards.
    """
    from bot.demo_run import run_demo

    settings = settings_or_exit(verbose, default_level="WARNING")
    guarded(lambda: run_demo(settings, out))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


def walk_commands() -> Iterator[list[str]]:
    """Every command path, for the docs test."""
    import typer.main

    root = typer.main.get_command(app)

    def visit(cmd: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from visit(sub, [*path, name])

    yield from visit(root, [])
