"""``policybot alerts …``: the alert outbox."""

from __future__ import annotations

from typing import Annotated

import typer

from bot.app import open_app, utc_now
from bot.cli.common import Verbose, fail, guarded, out, settings_or_exit

alerts_app = typer.Typer(help="The alert outbox.", no_args_is_help=True)


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
