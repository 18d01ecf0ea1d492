"""``policybot rules …``: validate and test the rules in rules/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bot.cli.common import escape_markup, fail, guarded, out, settings_or_exit
from bot.errors import ConfigError

rules_app = typer.Typer(help="Validate and test the rules in rules/.", no_args_is_help=True)


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
            out.print(escape_markup(str(error)), highlight=False, soft_wrap=True)
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
            out.print(f"[red]FAIL[/] {r.rule_id} {r.kind}: {escape_markup(str(title))}"
                      f" — {escape_markup(str(getattr(r, 'reason', '')))}", highlight=False)
        if failures:
            raise typer.Exit(1)

    guarded(body)
