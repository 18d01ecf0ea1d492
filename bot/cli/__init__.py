"""The ``policybot`` command line (Typer). Every command exits non-zero with a one-line
reason on bad input; ``policybot COMMAND --help`` documents each.

    bot/cli/common.py    consoles, failures, settings, shared options
    bot/cli/service.py   run, poll, status, demo, db upgrade
    bot/cli/feeds.py     feeds list
    bot/cli/rules.py     rules check, test, explain, backtest
    bot/cli/alerts.py    alerts retry
    bot/cli/digest.py    digest list, digest preview, digest send
    bot/cli/web.py       web (the console), web hash-password
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from bot import __version__
from bot.cli import service
from bot.cli.alerts import alerts_app
from bot.cli.common import out
from bot.cli.digest import digest_app
from bot.cli.feeds import feeds_app
from bot.cli.rules import rules_app
from bot.cli.web import web_app

app = typer.Typer(
    help="policybot: watch policy feeds, match them against YAML rules, alert Slack.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in (service.run, service.poll, service.status, service.demo):
    app.command()(command)
app.add_typer(service.db_app, name="db")
app.add_typer(feeds_app, name="feeds")
app.add_typer(rules_app, name="rules")
app.add_typer(alerts_app, name="alerts")
app.add_typer(digest_app, name="digest")
app.add_typer(web_app, name="web")


@app.callback(invoke_without_command=True)
def main_callback(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"policybot {__version__}")
        raise typer.Exit()


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
