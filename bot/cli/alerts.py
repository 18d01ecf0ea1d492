"""``policybot alerts …``: the alert outbox."""

from __future__ import annotations

from typing import Annotated

import typer

from bot.app import open_app, utc_now
from bot.cli.common import Verbose, guarded, out, settings_or_exit

alerts_app = typer.Typer(help="The alert outbox.", no_args_is_help=True)


@alerts_app.command("retry")
def alerts_retry(
    failed: Annotated[bool, typer.Option(
        "--failed", help="Also requeue alerts that failed permanently (after fixing the "
        "channel, the invitation or the token).")] = False,
    verbose: Verbose = False,
) -> None:
    """Retry now: alerts waiting out a backoff or a Retry-After become due at once; with
    --failed, failed alerts are requeued too. `run` or `poll` sends them.
    """
    settings = settings_or_exit(verbose, default_level="WARNING")

    def body() -> None:
        with open_app(settings) as bot:
            now = utc_now()
            failed_before = bot.store.alert_counts()["failed"] if failed else 0
            n = bot.store.requeue(now, failed=failed)
            waiting = n - failed_before
            if failed:
                out.print(f"{failed_before} failed alerts requeued, {waiting} waiting alerts "
                          "due now")
            else:
                failed_left = bot.store.alert_counts()["failed"]
                hint = (f"; {failed_left} failed alerts left (add --failed to requeue them)"
                        if failed_left else "")
                out.print(f"{n} waiting alerts due now{hint}")

    guarded(body)
