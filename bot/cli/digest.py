"""``policybot digest …``: list, preview and send the digest emails (rules/digests.yaml)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from bot.app import utc_now
from bot.cli.common import Verbose, escape_markup, fail, guarded, out, settings_or_exit
from bot.config import Settings
from bot.digest.config import DigestConfig, load_digests, validate_address
from bot.digest.context import digest_context
from bot.digest.job import DigestRunner, SendOutcome
from bot.digest.mail import SmtpSettings
from bot.digest.render import render_html, render_text
from bot.digest.schedule import next_send
from bot.digest.service import make_runner
from bot.errors import ConfigError
from bot.rules import RuleSet
from bot.store.digests import FAILED, RETRY, SENT, SKIPPED, DigestStore, SendRecord

digest_app = typer.Typer(
    help="The digest emails declared in rules/digests.yaml: list, preview, send.",
    no_args_is_help=True,
)

PeriodOption = Annotated[str | None, typer.Option(
    "--period", help="Which period: an ISO week (2026-W48, the period starting in it) or the "
                     "send date (2026-11-30). Default: the last complete period.")]


def _when(at: datetime | None, digest: DigestConfig) -> str:
    if at is None:
        return "—"
    local = at.astimezone(digest.tz)
    return f"{local:%a} {local.day} {local:%b %Y %H:%M} {local.tzname()}"


def _record_line(record: SendRecord, digest: DigestConfig) -> str:
    if record.status == SENT:
        line = f"sent {_when(record.sent_at, digest)} ({record.items} items"
        line += f", sent {record.sends} times)" if record.sends > 1 else ")"
        return line + (f"; {record.error}" if record.error else "")
    if record.status == SKIPPED:
        return f"empty, not sent (skip_empty) {_when(record.sent_at, digest)}"
    if record.status == RETRY:
        return f"retrying at {_when(record.next_attempt_at, digest)}: {record.error}"
    if record.status == FAILED:
        return f"failed: {record.error}"
    return f"sending since {_when(record.claimed_at, digest)}"


@digest_app.command("list")
def digest_list(verbose: Verbose = False) -> None:
    """Every digest: schedule, recipients, last period sent and the next send time."""
    settings = settings_or_exit(verbose, default_level="WARNING")

    def body() -> None:
        now = utc_now()
        with digest_context(settings) as ctx:
            if not ctx.digests:
                out.print(f"no digests in {ctx.path}")
                return
            table = Table("digest", "schedule", "recipients", "last period", "next send")
            for d in ctx.digests:
                last = ctx.store.sends(d.name, limit=1)
                last_text = (f"{_period_label(d, last[0])}: {_record_line(last[0], d)}"
                             if last else "never sent")
                table.add_row(d.name, f"{d.schedule} ({d.timezone})",
                              ", ".join(d.recipients), escape_markup(last_text),
                              _when(next_send(d, now), d))
            out.print(table)

    guarded(body)


def _period_label(digest: DigestConfig, record: SendRecord) -> str:
    from bot.digest.schedule import label

    return label(digest, record.period_start, record.period_end)


@digest_app.command("preview")
def digest_preview(
    name: Annotated[str, typer.Argument(help="The digest's name in rules/digests.yaml.")],
    period: PeriodOption = None,
    html: Annotated[Path | None, typer.Option(
        "--html", help="Write the HTML part (CSS inlined) to this file.")] = None,
    text: Annotated[bool, typer.Option(
        "--text", help="Print the plain-text part as mailed.")] = False,
    verbose: Verbose = False,
) -> None:
    """Render a digest without sending it: subject, recipients and sections, or the parts."""
    settings = settings_or_exit(verbose, default_level="WARNING")

    def body() -> None:
        now = utc_now()
        with digest_context(settings) as ctx:
            digest = ctx.digest(name)
            chosen = ctx.period(digest, period, now)
            runner = DigestRunner(store=ctx.store, rules=lambda: ctx.rules, mailer=None,
                                  sender=settings.smtp_from or "", clock=utc_now)
            built = runner.prepare(digest, chosen)
            if html is not None:
                try:
                    html.write_text(render_html(built), encoding="utf-8")
                except OSError as exc:
                    fail(f"--html: cannot write {html}: {exc.strerror}")
            if text:
                typer.echo(render_text(built), nl=False)
                return
            record = ctx.store.get(digest.name, chosen.end)
            out.print(f"Subject: {escape_markup(built.subject)}", highlight=False)
            out.print(f"To:      {', '.join(digest.recipients)}", highlight=False)
            out.print(f"Period:  {chosen.label}, {_when(chosen.start, digest)} – "
                      f"{_when(chosen.end, digest)}", highlight=False)
            state = _record_line(record, digest) if record else "not sent"
            out.print(f"Status:  {escape_markup(state)}", highlight=False)
            for section in built.sections:
                mark = " (experimental)" if section.experimental else ""
                out.print(f"  {section.severity:<8} {escape_markup(section.title)}{mark}: "
                          f"{section.stories} items", highlight=False)
            if built.first_mentions:
                names = ", ".join(fm.member for fm in built.first_mentions)
                out.print(f"  first mentions: {escape_markup(names)}", highlight=False)
            if built.empty:
                out.print("  nothing matched" + (" (not sent: skip_empty)"
                                                 if digest.skip_empty else ""))
            if html is not None:
                out.print(f"HTML written to {html}", highlight=False)
            else:
                out.print("(--text prints the text part, --html FILE writes the HTML)")

    guarded(body)


@digest_app.command("send")
def digest_send(
    name: Annotated[str, typer.Argument(help="The digest's name in rules/digests.yaml.")],
    period: PeriodOption = None,
    to: Annotated[list[str] | None, typer.Option(
        "--to", help="Send a copy to this address only (repeatable); the period is not "
                     "marked sent.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Send again even if this period was already sent or failed.")] = False,
    verbose: Verbose = False,
) -> None:
    """Send a digest now (by default the last complete period), once per period.

    A period already sent is not mailed again without --force. Needs POLICYBOT_SMTP_HOST and
    POLICYBOT_SMTP_FROM. Exits 1 when the server refused or could not be reached.
    """
    # The outcome is printed as one line; the job's log line would say it twice.
    settings = settings_or_exit(verbose, default_level="CRITICAL")
    addresses: list[str] = []
    for address in to or []:
        try:
            addresses.append(validate_address(address))
        except ValueError as exc:
            fail(f"--to: {address!r} is not an email address: {exc}", 2)

    def body() -> None:
        now = utc_now()
        SmtpSettings.from_settings(settings)  # a missing setting fails before anything else
        with digest_context(settings) as ctx:
            digest = ctx.digest(name)
            chosen = ctx.period(digest, period, now)
            runner = make_runner(settings, ctx.store, lambda: ctx.rules, utc_now)
            outcome = runner.send(digest, chosen, force=force, to=addresses)
            _report(outcome, digest)

    guarded(body)


def _report(outcome: SendOutcome, digest: DigestConfig) -> None:
    where = f"{outcome.digest} {outcome.period.label}"
    if outcome.result == "sent":
        who = ", ".join(outcome.recipients)
        out.print(f"{where}: sent to {who} ({outcome.items} items)", highlight=False)
        if outcome.error:
            out.print(f"  {escape_markup(outcome.error)}", highlight=False)
    elif outcome.result == "skipped":
        out.print(f"{where}: nothing matched; not sent (skip_empty)", highlight=False)
    elif outcome.result == "already":
        assert outcome.record is not None
        line = _record_line(outcome.record, digest)
        out.print(f"{where}: {escape_markup(line)}; --force sends it again", highlight=False)
    elif outcome.result == "retry":
        fail(f"{where}: temporary failure: {escape_markup(outcome.error or '')}; "
             f"`policybot run` tries again at {_when(outcome.retry_at, digest)}")
    else:
        fail(f"{where}: {escape_markup(outcome.error or 'failed')}")


def print_digest_status(console: Console, engine: Engine, settings: Settings,
                        rules: RuleSet | None) -> int:
    """The digest lines of ``policybot status``; returns how many need attention."""
    path = settings.rules_dir / "digests.yaml"
    try:
        digests = load_digests(path, [r.id for r in rules.rules] if rules else None)
    except ConfigError as exc:
        console.print("[red]digests[/] invalid (the running bot keeps its last good digests):")
        console.print(escape_markup(str(exc)), highlight=False)
        return 1
    if not digests:
        return 0
    try:
        SmtpSettings.from_settings(settings)
        smtp = None
    except ConfigError as exc:
        smtp = str(exc)
    store = DigestStore(engine)
    problems = 0
    now = utc_now()
    for d in digests:
        recent = store.sends(d.name, limit=5)
        last_sent = next((r for r in recent if r.status == SENT), None)
        colour = "red" if recent and recent[0].status == FAILED else "green"
        line = (f"last sent {_when(last_sent.sent_at, d)}" if last_sent else "not sent yet")
        console.print(f"[{colour}]digest[/] {d.name}: {line}; next {_when(next_send(d, now), d)}",
                      highlight=False)
        for r in recent:
            if r.status in (FAILED, RETRY):
                problems += r.status == FAILED
                console.print(f"  {_period_label(d, r)}: {escape_markup(_record_line(r, d))}",
                              highlight=False)
    if smtp:
        console.print(f"[yellow]digests[/] not sent until SMTP is set up: {escape_markup(smtp)}",
                      highlight=False)
    return problems
