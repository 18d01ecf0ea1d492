"""The Rules page and the rule editor: validation, the embedded tests and a backtest as the
analyst types; save (refused while invalid or failing, unless saved as experimental), new,
enable/disable, delete — each written atomically, committed if rules/ is a git repository,
and audited."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.errors import ConfigError, RuleError
from bot.rules import ExampleResult, Rule, RuleLoadError, RuleSet, load_rule_file
from bot.rules.examples import run_example
from bot.rules.load import RESERVED_FILES
from bot.ruletools import (
    COUNT_COLUMNS,
    Backtest,
    Draft,
    backtest,
    check_paths,
    load_draft,
    tally,
)
from bot.store.console import rule_counts
from bot.store.history import entries_since
from bot.web.app import (
    Console,
    console,
    current_user,
    flash,
    page,
    posted,
    redirect,
    require_editor,
)
from bot.web.app import (
    field as form_field,
)
from bot.web.auth import User
from bot.web.rulefiles import Conflict, read_text, set_top_level, version_of

WINDOWS = {"7d": 7, "30d": 30, "90d": 90}
DEFAULT_WINDOW = "30d"
SHOWN_ROWS = 100

TEMPLATE = """\
id: {id}
title: {title}
description: >
  What this rule is for, and what it must not catch.
status: experimental
severity: medium
owner: {owner}
terms:
  topic:
    - a phrase to find
query: $topic
tests:
  match:
    - "A headline the rule must catch: a phrase to find"
  no_match:
    - "A headline it must leave alone"
"""


# --- the rules directory ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleRow:
    id: str
    path: Path
    rule: Rule | None
    errors: tuple[RuleError, ...]
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def tests_pass(self) -> bool:
        return self.rule is not None and not (self.counts["FP"] or self.counts["FN"])


def rule_paths(rules_dir: Path) -> list[Path]:
    return sorted(p for p in rules_dir.glob("*.yaml")
                  if p.is_file() and p.name not in RESERVED_FILES)


def _counts(rule: Rule) -> Counter[str]:
    return tally(run_example(rule, ex) for ex in rule.examples).get(rule.id, Counter())


def rule_rows(rules_dir: Path, in_force: RuleSet | None) -> list[RuleRow]:
    """Every rule file with its tests' counts; with ``in_force`` None (the directory does
    not load), each file loaded on its own, so the broken ones show their errors."""
    if in_force is not None:
        return [RuleRow(r.id, r.path, r, (), _counts(r)) for r in in_force.rules]
    rows = []
    for path in rule_paths(rules_dir):
        try:
            rule = load_rule_file(path, rules_dir)
        except RuleLoadError as exc:
            rows.append(RuleRow(path.stem, path, None, tuple(exc.errors)))
            continue
        rows.append(RuleRow(rule.id, path, rule, (), _counts(rule)))
    return rows


async def rules_page(request: Request) -> Response:
    state = console(request)

    def load() -> dict[str, Any]:
        in_force = state.rules_in_force()
        errors: list[str] = []
        if state.rules.error is not None:  # a file is broken: list every problem
            prefix = f"{state.rules_dir}/"
            report = check_paths([state.rules_dir], state.rules_dir)
            errors = [str(e).removeprefix(prefix) for e in report.errors]
            in_force = None
        return {"rows": rule_rows(state.rules_dir, in_force), "errors": errors,
                "counts": rule_counts(state.engine, state.clock()),
                "recent": state.audit.latest(10)}

    data = await run_in_threadpool(load)
    return page(request, "rules.html", **data, now=state.clock(), columns=COUNT_COLUMNS)


# --- the editor ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preview:
    """What the editor shows under the text: errors, the tests, the backtest."""

    draft: Draft
    results: tuple[ExampleResult, ...]
    counts: Counter[str]
    backtest: Backtest | None
    window: str

    @property
    def failures(self) -> list[ExampleResult]:
        return [r for r in self.results if r.failed]

    @property
    def valid(self) -> bool:
        return self.draft.rule is not None

    @property
    def tests_pass(self) -> bool:
        return self.valid and not self.failures


def _path(state: Console, rule_id: str) -> Path:
    try:
        return state.files.path_for(rule_id)
    except ConfigError as exc:
        raise HTTPException(404, str(exc)) from None


def preview(state: Console, path: Path, text: str, window: str) -> Preview:
    """Validate ``text`` as the file at ``path``, run its examples and backtest it against
    the rule in force over the last ``window`` of stored entries."""
    in_force = state.rules_in_force()
    others = in_force.rules if in_force else ()
    draft = load_draft(text, path, state.rules_dir, others=others)
    if draft.rule is None:
        return Preview(draft, (), Counter(), None, window)
    rule = draft.rule
    results = tuple(run_example(rule, ex) for ex in rule.examples)
    counts = tally(results).get(rule.id, Counter())
    current = in_force.get(rule.id) if in_force else None
    if current is None and path.is_file():  # in force is broken: compare with the file
        try:
            current = load_rule_file(path, state.rules_dir)
        except RuleLoadError:
            current = None
    since = state.clock() - timedelta(days=WINDOWS[window])
    result = backtest(rule, current, entries_since(state.store, since))
    return Preview(draft, results, counts, result, window)


def _window(value: str | None) -> str:
    return value if value in WINDOWS else DEFAULT_WINDOW


async def editor(request: Request) -> Response:
    state = console(request)
    rule_id = request.path_params["rule_id"]
    path = _path(state, rule_id)
    text = read_text(path)
    user = current_user(request)
    if text is None:
        if request.query_params.get("new") != "1":
            raise HTTPException(404, f"no rule {rule_id} (its file would be "
                                     f"{state.files.relative(path)})")
        title = request.query_params.get("title") or rule_id.replace("-", " ").capitalize()
        return await _editor_page(request, path, TEMPLATE.format(
            id=rule_id, title=_yaml_scalar(title), owner=_yaml_scalar(user.display)),
            version="", new=True)
    return await _editor_page(request, path, text, version=version_of(text), new=False)


async def _editor_page(request: Request, path: Path, text: str, *, version: str, new: bool,
                       status_code: int = 200, refused: list[str] | None = None,
                       message: str = "") -> Response:
    state = console(request)
    window = _window(request.query_params.get("window"))
    shown = await run_in_threadpool(preview, state, path, text, window)
    history = await run_in_threadpool(state.audit.for_subject, path.stem)
    return page(request, "rule.html", status_code=status_code, rule_id=path.stem, text=text,
                version=version, new=new, p=shown, windows=list(WINDOWS), history=history,
                refused=refused or [], message=message, in_git=state.files.in_git(),
                relative=state.files.relative(path), now=state.clock(), shown_rows=SHOWN_ROWS)


async def preview_fragment(request: Request) -> Response:
    state = console(request)
    form = await posted(request)
    path = _path(state, request.path_params["rule_id"])
    window = _window(form_field(form, "window"))
    shown = await run_in_threadpool(preview, state, path, form_field(form, "yaml"), window)
    return page(request, "_preview.html", p=shown, shown_rows=SHOWN_ROWS)


def _refusals(shown: Preview) -> list[str]:
    reasons = [_where(e) for e in shown.draft.errors]
    reasons += [f"test fails: {r.kind} (line {r.line}): {r.reason}" for r in shown.failures]
    return reasons


def _where(error: RuleError) -> str:
    if error.line is None:
        return error.message
    col = f":{error.col}" if error.col is not None else ""
    return f"line {error.line}{col}: {error.message}"


async def save(request: Request) -> Response:
    state = console(request)
    user = require_editor(request)
    form = await posted(request)
    path = _path(state, request.path_params["rule_id"])
    text = form_field(form, "yaml").replace("\r\n", "\n")
    version = form_field(form, "version")
    message = form_field(form, "message").strip()
    experimental = form_field(form, "experimental") == "1"
    new = version == ""
    shown = await run_in_threadpool(preview, state, path, text, DEFAULT_WINDOW)
    if not shown.valid or (shown.failures and not experimental):
        return await _editor_page(request, path, text, version=version, new=new,
                                  status_code=422, refused=_refusals(shown), message=message)
    action = "create" if new else "save"
    if experimental and shown.failures:
        text = set_top_level(text, "status", "experimental")
        action += "-experimental"
        if (await run_in_threadpool(preview, state, path, text, DEFAULT_WINDOW)).draft.rule is None:
            raise HTTPException(500, "marking the rule experimental made it invalid")
    message = message or f"{'Add' if new else 'Edit'} rule {path.stem} in the web console"
    return await _write(request, user, path, text, version, action, message, new=new)


async def _write(request: Request, user: User, path: Path, text: str | None, version: str,
                 action: str, message: str, *, new: bool = False) -> Response:
    state = console(request)
    try:
        saved = await run_in_threadpool(
            lambda: state.files.write(path, text, expected=version, author_name=user.display,
                                      author_email=user.email, message=message))
    except Conflict as exc:
        if text is None:
            raise HTTPException(409, str(exc)) from None
        return await _editor_page(request, path, text, version=version, new=new,
                                  status_code=409, refused=[str(exc)], message=message)
    except (ConfigError, OSError) as exc:
        raise HTTPException(500, f"could not save {state.files.relative(path)}: {exc}") from None
    await run_in_threadpool(lambda: state.audit.record(
        at=state.clock(), user=user.name, action=action, subject=path.stem,
        path=state.files.relative(path), message=message, diff=saved.diff, commit=saved.commit))
    done = {"create": "created", "delete": "deleted", "enable": "enabled",
            "disable": "disabled"}.get(action, "saved")
    commit = f"; committed {saved.commit[:10]}" if saved.commit else ""
    flash(request, f"{path.stem} {done}{commit}. The running bot picks it up at its next "
                   "rules reload.")
    return redirect("/rules" if text is None else f"/rules/{path.stem}")


async def new_form(request: Request) -> Response:
    require_editor(request)
    return page(request, "rule_new.html", error=None, rule_id="", title="")


async def new(request: Request) -> Response:
    state = console(request)
    require_editor(request)
    form = await posted(request)
    rule_id = form_field(form, "id").strip()
    title = form_field(form, "title").strip()
    try:
        path = state.files.path_for(rule_id)
    except ConfigError as exc:
        return page(request, "rule_new.html", status_code=422, error=str(exc),
                    rule_id=rule_id, title=title)
    if path.exists():
        return page(request, "rule_new.html", status_code=409, rule_id=rule_id, title=title,
                    error=f"{state.files.relative(path)} already exists")
    from urllib.parse import urlencode

    return redirect(f"/rules/{rule_id}?" + urlencode({"new": "1", "title": title or rule_id}))


async def set_enabled(request: Request) -> Response:
    state = console(request)
    user = require_editor(request)
    form = await posted(request)
    path = _path(state, request.path_params["rule_id"])
    text = read_text(path)
    if text is None:
        raise HTTPException(404, f"no rule {path.stem}")
    enable = form_field(form, "enabled") == "true"
    edited = set_top_level(text, "enabled", "true" if enable else "false")
    shown = await run_in_threadpool(preview, state, path, edited, DEFAULT_WINDOW)
    if not shown.valid:
        raise HTTPException(422, "the rule does not load; fix it in the editor first: "
                                 + "; ".join(_refusals(shown)))
    action = "enable" if enable else "disable"
    message = form_field(form, "message").strip() or f"{action.capitalize()} rule {path.stem}"
    return await _write(request, user, path, edited, form_field(form, "version"), action,
                        message)


async def delete_form(request: Request) -> Response:
    state = console(request)
    require_editor(request)
    path = _path(state, request.path_params["rule_id"])
    text = read_text(path)
    if text is None:
        raise HTTPException(404, f"no rule {path.stem}")
    return page(request, "rule_delete.html", rule_id=path.stem, version=version_of(text),
                relative=state.files.relative(path))


async def delete(request: Request) -> Response:
    state = console(request)
    user = require_editor(request)
    form = await posted(request)
    path = _path(state, request.path_params["rule_id"])
    if form_field(form, "confirm") != path.stem:
        raise HTTPException(422, f"type the rule's id ({path.stem}) to confirm")
    message = form_field(form, "message").strip() or f"Delete rule {path.stem}"
    return await _write(request, user, path, None, form_field(form, "version"), "delete",
                        message)


def _yaml_scalar(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


routes = [
    Route("/rules", rules_page, methods=["GET"]),
    Route("/rules/new", new_form, methods=["GET"]),
    Route("/rules/new", new, methods=["POST"]),
    Route("/rules/{rule_id}", editor, methods=["GET"]),
    Route("/rules/{rule_id}/preview", preview_fragment, methods=["POST"]),
    Route("/rules/{rule_id}/save", save, methods=["POST"]),
    Route("/rules/{rule_id}/enabled", set_enabled, methods=["POST"]),
    Route("/rules/{rule_id}/delete", delete_form, methods=["GET"]),
    Route("/rules/{rule_id}/delete", delete, methods=["POST"]),
]
