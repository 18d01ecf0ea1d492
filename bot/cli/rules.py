"""``policybot rules …``: validate, test, explain and backtest the rules in rules/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from bot.cli.common import OutputFormat, err, escape_markup, fail, guarded, out, settings_or_exit
from bot.errors import ConfigError, RuleError
from bot.model import Entry, Hit

if TYPE_CHECKING:
    from bot.rules import Rule, RuleSet
    from bot.rules.explain import Part
    from bot.store import Store
    from bot.store.history import StoredItem

rules_app = typer.Typer(
    help="Validate, test, explain and backtest the rules in rules/.", no_args_is_help=True
)

FormatOption = Annotated[
    OutputFormat, typer.Option("--format", help="table (for people) or json (for editors, CI).")
]


def _error_json(error: RuleError, severity: str) -> dict[str, Any]:
    return {"path": str(error.path) if error.path else None, "line": error.line,
            "col": error.col, "severity": severity, "message": error.message}


@rules_app.command("check")
def rules_check(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Rules directories or rule files (default: POLICYBOT_RULES_DIR)."),
    ] = None,
    format: FormatOption = OutputFormat.table,
) -> None:
    """Validate every rule and list file; print file:line:col: message for each problem.

    Exits 1 on any error (warnings, such as an acronym without case:, do not fail).
    """
    from bot.ruletools import check_paths

    settings = settings_or_exit(default_level="WARNING")
    try:
        report = check_paths(paths or [settings.rules_dir], settings.rules_dir)
    except ConfigError as exc:
        fail(str(exc), 1)
    errors, warnings, count = report.errors, report.warnings, report.rules
    if format is OutputFormat.json:
        out.print_json(json.dumps({
            "ok": not errors, "rules": count,
            "errors": [_error_json(e, "error") for e in errors],
            "warnings": [_error_json(w, "warning") for w in warnings],
        }, ensure_ascii=False))
    else:
        for error in errors:
            out.print(escape_markup(str(error)), highlight=False, soft_wrap=True)
        for warning in warnings:
            text = f"{warning.location_prefix()}warning: {warning.message}"
            out.print(escape_markup(text), highlight=False, soft_wrap=True)
    if errors:
        if format is OutputFormat.table:
            fail(f"{len(errors)} error(s)")
        raise typer.Exit(1)
    if format is OutputFormat.table:
        where = ", ".join(f"{p}" for p in paths or [settings.rules_dir])
        out.print(f"{count} rules OK in {escape_markup(where)}"
                  + (f" ({len(warnings)} warning(s))" if warnings else ""))


@rules_app.command("test")
def rules_test(
    rule: Annotated[list[str] | None, typer.Argument(help="Rule ids (default: all).")] = None,
) -> None:
    """Run every rule's embedded examples: a TP/TN/FP/FN table and, for each failure, why.

    todo_match / todo_no_match examples are reported, never failing. Exit 1 on any failure.
    """
    from bot.rules import load_rules, run_examples
    from bot.ruletools import COUNT_COLUMNS, tally

    settings = settings_or_exit(default_level="WARNING")

    def body() -> None:
        rules = load_rules(settings.rules_dir)
        if rule:
            unknown = sorted(set(rule) - {r.id for r in rules.rules})
            if unknown:
                fail(f"no such rule: {', '.join(unknown)}")
        results = [r for r in run_examples(rules) if not rule or r.rule_id in rule]
        table = Table(title="Rule examples", title_justify="left")
        for column in ("rule", *COUNT_COLUMNS):
            table.add_column(column, justify="left" if column == "rule" else "right")
        by_rule = tally(results)
        for rule_id, counts in sorted(by_rule.items()):
            table.add_row(rule_id, *(str(counts[c]) for c in COUNT_COLUMNS))
        out.print(table)
        failures = [r for r in results if r.failed]
        for r in results:
            if r.failed or (r.kind.startswith("todo") and r.passed):
                label = "[red]FAIL[/]" if r.failed else "[yellow]TODO FIXED[/]"
                where = f" (line {r.line})" if r.line else ""
                out.print(f"{label} {r.rule_id} {r.kind}{where}: "
                          f"{escape_markup(_example_text(r.example))}\n"
                          f"     why: {escape_markup(r.reason)}", highlight=False,
                          soft_wrap=True)
        if failures:
            raise typer.Exit(1)

    guarded(body)


def _example_text(entry: Entry) -> str:
    return entry.title or entry.summary or entry.content or ", ".join(entry.categories)


# --- explain -----------------------------------------------------------------------------


def _load_ruleset() -> tuple[Any, RuleSet]:
    from bot.rules import load_rules

    settings = settings_or_exit(default_level="WARNING")
    try:
        return settings, load_rules(settings.rules_dir)
    except ConfigError as exc:
        fail(str(exc), 2)


def _rule_or_fail(rules: RuleSet, rule_id: str) -> Rule:
    import difflib

    rule = rules.get(rule_id)
    if rule is None:
        ids = [r.id for r in rules.rules]
        close = difflib.get_close_matches(rule_id, ids, n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (rules: {', '.join(ids)})"
        fail(f"no such rule: {rule_id}{hint}")
    return rule


def _open_store(database_url: str) -> Store:
    from bot.store import Store, make_engine

    return Store(make_engine(database_url))


def _stored(store: Store, entry_id: int | None, url: str | None) -> StoredItem:
    from sqlalchemy.exc import SQLAlchemyError

    from bot.store.history import entry_by_id, entry_by_link

    try:
        item = entry_by_id(store, entry_id) if entry_id is not None else (
            entry_by_link(store, url or ""))
    except SQLAlchemyError as exc:
        fail(f"database: {exc.__class__.__name__}: {getattr(exc, 'orig', exc)} "
             "(run `policybot db upgrade` first?)")
    if item is None:
        what = f"#{entry_id}" if entry_id is not None else f"with link {url}"
        fail(f"no stored entry {what}")
    return item


def highlighted(text: str, hits: list[Hit] | tuple[Hit, ...], field: str) -> Text:
    """``text`` with the hits in ``field`` in bold reverse (feed text is never markup)."""
    shown = Text(text)
    for h in hits:
        if h.field == field and 0 <= h.start < h.end <= len(text):
            shown.stylize("bold reverse", h.start, h.end)
    return shown


def _part_tree(part: Part, tree: Tree) -> None:
    mark = "[green]✓[/]" if part.matched else "[red]✗[/]"
    label = f"{mark} {escape_markup(part.label)}"
    if part.found:
        terms = ", ".join(dict.fromkeys(f"{h.term} ({h.field})" for h in part.found))
        label += f"  [dim]found {escape_markup(terms)}[/]"
    branch = tree.add(label)
    for child in part.parts:
        _part_tree(child, branch)


@rules_app.command("explain")
def rules_explain(
    rule_id: Annotated[str, typer.Argument(metavar="RULE", help="The rule id.")],
    text: Annotated[str | None, typer.Option("--text", help="A title to test.")] = None,
    summary: Annotated[str, typer.Option("--summary", help="A summary, with --text.")] = "",
    entry_id: Annotated[int | None, typer.Option("--entry", help="A stored entry's id.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="A stored entry's link.")] = None,
    feed: Annotated[str, typer.Option("--feed", help="Feed name, with --text.")] = "example",
) -> None:
    """Show the rule's query as a tree: which parts and exclusions held, which terms were
    found, and the matched spans highlighted."""
    from bot.rules.explain import explain
    from bot.rules.match import Document

    if sum(x is not None for x in (text, entry_id, url)) != 1:
        fail("give exactly one of --text, --entry ID or --url URL")
    settings, rules = _load_ruleset()
    rule = _rule_or_fail(rules, rule_id)
    tags: tuple[str, ...] = ()
    if text is not None:
        entry = Entry(key="explain", title=text, summary=summary)
    else:
        item = _stored(_open_store(settings.database_url), entry_id, url)
        entry, feed, tags = item.entry, item.feed_name, item.feed_tags
    doc = Document(entry, feed_name=feed, feed_tags=tags)
    found = explain(rule, doc)
    tree = Tree(f"[bold]{escape_markup(rule.id)}[/] query: {escape_markup(rule.query.strip())}")
    _part_tree(found.query, tree)
    for name, part in found.excludes:
        branch = tree.add(f"exclude [bold]{escape_markup(name)}[/]")
        _part_tree(part, branch)
    out.print(tree, highlight=False)
    if found.result.matched:
        verdict = "[green]MATCH[/]"
    elif found.result.query_matched:
        verdict = f"[yellow]EXCLUDED[/] by {escape_markup(', '.join(found.result.excluded_by))}"
    else:
        verdict = "[red]NO MATCH[/]"
    if not rule.in_scope(feed, tags):
        verdict += f" (but feed {escape_markup(feed)} is outside scope.feeds)"
    out.print(f"result: {verdict}", highlight=False)
    hits = found.result.hits
    for field_name in ("title", "summary", "content", "category"):
        value = entry.title if field_name == "title" else entry.summary if (
            field_name == "summary") else entry.content if field_name == "content" else (
            "\n".join(entry.categories))
        if value and any(h.field == field_name for h in hits):
            out.print(Text(f"{field_name}: ", style="dim")
                      + highlighted(value, hits, field_name))


# --- backtest ----------------------------------------------------------------------------

def parse_since(value: str, now: datetime) -> datetime:
    from bot.ruletools import parse_since as parse

    try:
        return parse(value, now)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@rules_app.command("backtest")
def rules_backtest(
    target: Annotated[str, typer.Argument(
        metavar="RULE|PATH", help="A rule id, or a rule file (an edit not yet in rules/).")],
    since: Annotated[str, typer.Option("--since", help="How far back: 30d, 12h, 2w or a date.")
                     ] = "30d",
    limit: Annotated[int, typer.Option("--limit", help="Rows shown in the table.")] = 50,
    format: FormatOption = OutputFormat.table,
) -> None:
    """Run a rule (or an edited rule file) over stored entries: what it would have alerted,
    per feed, and — against the rule in force — the entries gained and lost."""
    from rich.progress import Progress
    from sqlalchemy.exc import SQLAlchemyError

    from bot.rules import RuleLoadError, load_rule_file
    from bot.ruletools import backtest
    from bot.store.history import count_entries_since, entries_since

    settings, rules = _load_ruleset()
    path = Path(target)
    if target.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            fail(f"{target}: no such file")
        try:
            candidate = load_rule_file(path, settings.rules_dir)
        except RuleLoadError as exc:
            fail(str(exc))
        current = rules.get(candidate.id)
    else:
        candidate = _rule_or_fail(rules, target)
        current = None
    start = parse_since(since, datetime.now(UTC))
    store = _open_store(settings.database_url)
    try:
        total = count_entries_since(store, start)
        with Progress(console=err, transient=True,
                      disable=format is OutputFormat.json or total < 2000) as progress:
            task = progress.add_task("backtest", total=total)

            def items() -> Iterator[StoredItem]:
                for item in entries_since(store, start):
                    progress.advance(task)
                    yield item

            result = backtest(candidate, current, items())
    except SQLAlchemyError as exc:
        fail(f"database: {getattr(exc, 'orig', exc)} (run `policybot db upgrade` first?)")
    finally:
        store.engine.dispose()
    read, rows = result.entries, result.rows
    matched, gained, lost = result.matched, result.gained, result.lost
    per_feed = result.per_feed()
    if format is OutputFormat.json:
        out.print_json(json.dumps({
            "rule": candidate.id, "since": start.isoformat(), "entries": read,
            "matched": len(matched), "per_feed": dict(per_feed),
            "compared_with_rule_in_force": current is not None,
            "gained": len(gained), "lost": len(lost),
            "rows": [{"entry": r.entry_id, "feed": r.feed, "title": r.title, "link": r.link,
                      "first_seen_at": r.first_seen_at.isoformat(), "change": r.change,
                      "terms": list(dict.fromkeys(h.term for h in r.hits))} for r in rows],
        }, ensure_ascii=False))
        return
    out.print(f"[bold]{escape_markup(candidate.id)}[/] over {read} entries since "
              f"{start:%Y-%m-%d %H:%M} UTC: [bold]{len(matched)}[/] would match"
              + (f"; against the rule in force: [green]+{len(gained)} gained[/], "
                 f"[red]-{len(lost)} lost[/]" if current is not None else ""), highlight=False)
    if per_feed:
        feeds = Table(title="Per feed", title_justify="left")
        feeds.add_column("feed")
        feeds.add_column("matches", justify="right")
        for name, n in per_feed:
            feeds.add_row(escape_markup(name), str(n))
        out.print(feeds)
    if rows:
        table = Table(title="Entries", title_justify="left")
        for column in ("id", "seen", "feed", "change", "title"):
            table.add_column(column)
        for r in result.ordered()[:limit]:
            change = {"gained": "[green]+ gained[/]", "lost": "[red]- lost[/]"}.get(r.change, "")
            table.add_row(str(r.entry_id), f"{r.first_seen_at:%Y-%m-%d}", escape_markup(r.feed),
                          change, highlighted(r.title, r.hits, "title"))
        out.print(table)
        if len(rows) > limit:
            out.print(f"… {len(rows) - limit} more (--limit, or --format json for all)")
