"""What every command shares: consoles, one-line failures, settings, the output format."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from bot.config import Settings, load_settings
from bot.errors import BotError, ConfigError
from bot.logs import setup_logging

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")]


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
               settings.slack_webhook_url, settings.smtp_password, settings.web_secret)
               if s is not None]
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


def escape_markup(text: str) -> str:
    """Feed and error text shown inside Rich markup: never interpreted as markup."""
    return escape(text)
