"""The analysts' rule tools, as functions: check files, tally the embedded examples, load an
edit that is not saved yet, backtest a rule against stored entries. The CLI
(``policybot rules …``) prints their results with Rich; the web console renders them as
pages. Neither holds a second implementation."""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.errors import RuleError
from bot.model import Hit
from bot.rules import (
    ExampleResult,
    Rule,
    RuleLoadError,
    load_rule_file,
    load_rules,
)
from bot.store.history import StoredItem

COUNT_COLUMNS = ("TP", "TN", "FP", "FN", "todo", "todo fixed")


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What ``rules check`` found: the rules that load, every error and warning."""

    rules: int
    errors: tuple[RuleError, ...]
    warnings: tuple[RuleError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_paths(paths: Sequence[Path], rules_dir: Path) -> CheckReport:
    """Validate rules directories and rule files (a file alone uses ``rules_dir``'s lists,
    or its own directory's ``lists/`` if there is one). A ConfigError that is not about a
    rule (no such directory) propagates."""
    errors: list[RuleError] = []
    warnings: list[RuleError] = []
    count = 0
    for path in paths:
        try:
            if path.is_file():
                lists_dir = path.parent if (path.parent / "lists").is_dir() else rules_dir
                load_rule_file(path, lists_dir)
                count += 1
            else:
                loaded = load_rules(path)
                count += len(loaded.rules)
                warnings.extend(loaded.warnings)
        except RuleLoadError as exc:
            errors.extend(exc.errors)
    return CheckReport(count, tuple(errors), tuple(warnings))


def tally(results: Iterable[ExampleResult]) -> dict[str, Counter[str]]:
    """Per rule: TP, TN, FP, FN, todo (a known gap) and todo fixed (a gap now closed)."""
    by_rule: dict[str, Counter[str]] = {}
    for r in results:
        counts = by_rule.setdefault(r.rule_id, Counter())
        if r.kind == "match":
            counts["TP" if r.passed else "FN"] += 1
        elif r.kind == "no_match":
            counts["TN" if r.passed else "FP"] += 1
        else:
            counts["todo fixed" if r.passed else "todo"] += 1
    return by_rule


@dataclass(frozen=True, slots=True)
class Draft:
    """An edited rule file, not saved: the rule if it loads, else every error in it (with
    the line and column of the text as typed), and the warnings either way."""

    rule: Rule | None
    errors: tuple[RuleError, ...] = ()
    warnings: tuple[RuleError, ...] = ()


def load_draft(text: str, path: Path, rules_dir: Path, *, others: Iterable[Rule] = ()) -> Draft:
    """Load ``text`` as if it were saved at ``path`` (its name is the rule's id), with the
    shared lists of ``rules_dir``. ``others``: the other rules in force, whose ids the draft
    must not take."""
    with tempfile.TemporaryDirectory(prefix="policybot-draft-") as tmp:
        draft_path = Path(tmp) / path.name
        draft_path.write_text(text, encoding="utf-8")
        found: list[RuleError] = []
        try:
            rule = load_rule_file(draft_path, rules_dir, warnings=found)
        except RuleLoadError as exc:
            return Draft(None, tuple(_relocated(e, draft_path, path) for e in exc.errors),
                         tuple(_relocated(w, draft_path, path) for w in found))
    warnings = tuple(_relocated(w, draft_path, path) for w in found)
    taken = {r.id: r for r in others}
    if rule.id in taken and taken[rule.id].path.resolve() != path.resolve():
        error = RuleError(f"id '{rule.id}' is already used by {taken[rule.id].path}", path=path)
        return Draft(None, (error,), warnings)
    return Draft(rule, (), warnings)


def _relocated(error: RuleError, draft: Path, path: Path) -> RuleError:
    if error.path is None or error.path != draft:
        return error
    return RuleError(error.message, path=path, line=error.line, col=error.col)


# --- backtest ----------------------------------------------------------------------------

_SINCE = re.compile(r"(\d+)([hdw])")


def parse_since(value: str, now: datetime) -> datetime:
    """``30d``, ``12h``, ``2w`` before ``now``, or an ISO date/time (UTC if no zone).
    Raises ValueError with a hint otherwise."""
    m = _SINCE.fullmatch(value.strip())
    if m:
        unit = {"h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("use e.g. 30d, 12h, 2w or 2026-11-01") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BacktestRow:
    entry_id: int
    feed: str
    title: str
    link: str | None
    first_seen_at: datetime
    hits: tuple[Hit, ...]
    change: str  # "" (both match), "gained" (new rule only), "lost" (current rule only)


@dataclass(frozen=True, slots=True)
class Backtest:
    """What a rule would have matched among ``entries`` stored entries, compared (when
    ``compared``) with the rule in force."""

    entries: int
    rows: tuple[BacktestRow, ...]
    compared: bool

    @property
    def matched(self) -> list[BacktestRow]:
        return [r for r in self.rows if r.change != "lost"]

    @property
    def gained(self) -> list[BacktestRow]:
        return [r for r in self.rows if r.change == "gained"]

    @property
    def lost(self) -> list[BacktestRow]:
        return [r for r in self.rows if r.change == "lost"]

    def per_feed(self) -> list[tuple[str, int]]:
        return Counter(r.feed for r in self.matched).most_common()

    def ordered(self) -> list[BacktestRow]:
        """Changes first, then newest first."""
        return sorted(self.rows, key=lambda r: (r.change == "", -r.first_seen_at.timestamp()))


def backtest(candidate: Rule, current: Rule | None, items: Iterator[StoredItem]) -> Backtest:
    """Every entry either rule matches, marked gained/lost when ``current`` is given."""
    read = 0
    rows: list[BacktestRow] = []
    for item in items:
        read += 1
        new = candidate.match(item.entry, feed_name=item.feed_name, feed_tags=item.feed_tags)
        old = None if current is None else current.match(
            item.entry, feed_name=item.feed_name, feed_tags=item.feed_tags)
        if new is None and old is None:
            continue
        change = "" if current is None or (new is not None and old is not None) else (
            "gained" if new is not None else "lost")
        shown = new if new is not None else old
        hits = shown.hits if shown is not None else ()
        rows.append(BacktestRow(item.id, item.feed_name, item.entry.title, item.entry.link,
                                item.first_seen_at, hits, change))
    return Backtest(read, tuple(rows), current is not None)
