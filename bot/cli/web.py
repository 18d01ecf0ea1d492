"""``policybot web``: the analysts' console in a browser; ``web hash-password`` for users."""

from __future__ import annotations

from typing import Annotated

import typer

from bot.cli.common import Verbose, err, guarded, out, settings_or_exit

web_app = typer.Typer(
    help="The analysts' web console: alerts, rules with a live editor, feeds, digests.",
    invoke_without_command=True,
)


@web_app.callback()
def web(
    ctx: typer.Context,
    bind: Annotated[str, typer.Option(
        "--bind", metavar="HOST:PORT",
        help="Where to listen. A non-loopback address needs POLICYBOT_WEB_USERS or "
             "POLICYBOT_WEB_USER_HEADER.")] = "127.0.0.1:8080",
    verbose: Verbose = False,
) -> None:
    """Serve the console until Ctrl-C.

    Without POLICYBOT_WEB_USERS or POLICYBOT_WEB_USER_HEADER it serves loopback only, with
    you as its one editor. Saved rules are written to POLICYBOT_RULES_DIR (and committed, if
    it is a git repository); a running bot picks them up at its next reload.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_or_exit(verbose)

    def body() -> None:
        from bot.web.server import make_server

        server = make_server(settings, bind)
        err.print(f"policybot web console on {server.url} (Ctrl-C stops it)", highlight=False)
        server.run()

    guarded(body)


@web_app.command("hash-password")
def hash_password() -> None:
    """Prompt for a password; print its argon2 hash for POLICYBOT_WEB_USERS (NAME:ROLE:HASH)."""
    from bot.web.auth import hash_password as make_hash

    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 10:
        err.print("[red]error:[/] use at least 10 characters")
        raise typer.Exit(1)
    out.print(make_hash(password), highlight=False, soft_wrap=True)
