"""Read the rules directory into a :class:`RuleSet`, or report every mistake in it.

The loader reads YAML node trees (``yaml.compose``) rather than plain values, so that every
error carries the file, line and column it is about; errors inside a query point at the
column of the offending token within the query text. All files are checked and every error
collected before :class:`RuleLoadError` is raised: an analyst fixes a batch, not one at a time.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

from bot.errors import ConfigError, RuleError
from bot.model import Entry, RuleStatus, Severity
from bot.rules import query as q
from bot.rules.match import DEFAULT_FIELDS, Compiled, compile_query
from bot.rules.ruleset import EXAMPLE_KINDS, Example, ExampleKind, Rule, RuleSet
from bot.rules.terms import (
    ListEntry,
    Pattern,
    PatternError,
    TermList,
    looks_like_acronym,
    make_pattern,
)

_T = TypeVar("_T")

RESERVED_FILES = frozenset({"feeds.yaml", "digests.yaml"})
LISTS_DIR = "lists"

RULE_KEYS = (
    "id", "title", "description", "status", "severity", "owner", "references", "scope",
    "terms", "query", "exclude", "track", "route", "tests", "enabled",
)
SCOPE_KEYS = ("feeds", "fields")
ROUTE_KEYS = ("slack", "digest")
ENTRY_KEYS = ("term", "aliases", "case")
ALIAS_KEYS = ("term", "case")
EXAMPLE_KEYS = ("title", "summary", "content", "lang", "feed", "author", "category", "link")
CASE_VALUES = ("sensitive", "insensitive")

_KEBAB = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_SLACK_CHANNEL = re.compile(r"#[a-z0-9][a-z0-9._-]{0,79}|[CGD][A-Z0-9]{6,}")
_ESCAPE_LENGTH = {"x": 4, "u": 6, "U": 10}  # \xXX, \uXXXX, \UXXXXXXXX; the others are 2
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"


class RuleLoadError(ConfigError):
    """One or more rule or list files are invalid; ``errors`` has every one of them."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors: list[RuleError] = sorted(errors, key=_error_order)
        super().__init__("\n".join(str(e) for e in self.errors))


def _error_order(err: RuleError) -> tuple[str, int, int]:
    return (str(err.path or ""), err.line or 0, err.col or 0)


def _did_you_mean(value: str, choices: Sequence[str], fmt: str = "'{}'") -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {fmt.format(close[0])}?" if close else ""


# --- positions ---------------------------------------------------------------------------


def _line_col(source: str, index: int) -> tuple[int, int]:
    line_start = source.rfind("\n", 0, index) + 1
    return source.count("\n", 0, index) + 1, index - line_start + 1


def _scalar_index(node: yaml.ScalarNode, source: str, offset: int) -> int:
    """Index in ``source`` of character ``offset`` of the scalar's value.

    The value is aligned with the raw text of the scalar: equal characters advance both,
    indentation and line breaks that YAML folded away advance the raw side, and escape
    sequences (which differ) advance the raw side until they agree again.
    """
    raw_start = node.start_mark.index
    raw = source[raw_start : node.end_mark.index]
    j = 0
    if node.style in ('"', "'"):
        j = 1
    elif node.style in ("|", ">"):
        j = raw.find("\n") + 1
    value = node.value
    i = 0
    while i < offset and j < len(raw):
        if node.style == '"' and raw[j] == "\\" and j + 1 < len(raw):
            kind = raw[j + 1]
            if kind in "\r\n":  # an escaped line break joins the lines
                j += 2
            else:  # one escape sequence is one character of the value
                i += 1
                j += _ESCAPE_LENGTH.get(kind, 2)
        elif node.style == "'" and raw.startswith("''", j):
            i += 1
            j += 2
        elif value[i] == raw[j]:
            i += 1
            j += 1
        elif raw[j] in " \t\r\n":
            j += 1
        elif value[i] in " \n":
            i += 1
        else:
            j += 1
    while j < len(raw) and raw[j] in " \t\r\n" and i < len(value) and value[i] != raw[j]:
        j += 1
    return raw_start + j


@dataclass
class _File:
    """One file being read: where errors go, and how to place them."""

    path: Path
    source: str
    errors: list[RuleError]
    warnings: list[RuleError]
    failed: bool = False

    def _make(self, at: yaml.Node | yaml.Mark | None, message: str) -> RuleError:
        if at is None:
            return RuleError(message, path=self.path)
        mark = at.start_mark if isinstance(at, yaml.Node) else at
        return RuleError(message, path=self.path, line=mark.line + 1, col=mark.column + 1)

    def error(self, at: yaml.Node | yaml.Mark | None, message: str) -> None:
        self.failed = True
        self.errors.append(self._make(at, message))

    def warn(self, at: yaml.Node | yaml.Mark | None, message: str) -> None:
        self.warnings.append(self._make(at, message))

    def _at_offset(self, node: yaml.ScalarNode, offset: int, message: str) -> RuleError:
        line, col = _line_col(self.source, _scalar_index(node, self.source, offset))
        return RuleError(message, path=self.path, line=line, col=col)

    def error_at(self, node: yaml.ScalarNode, offset: int, message: str) -> None:
        self.failed = True
        self.errors.append(self._at_offset(node, offset, message))

    def warn_at(self, node: yaml.ScalarNode, offset: int, message: str) -> None:
        self.warnings.append(self._at_offset(node, offset, message))

    # --- typed readers -------------------------------------------------------------------

    def mapping(
        self, node: yaml.Node, allowed: Sequence[str], what: str
    ) -> dict[str, tuple[yaml.ScalarNode, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping with keys {', '.join(allowed)}")
            return None
        out: dict[str, tuple[yaml.ScalarNode, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                self.error(key, f"{what}: keys must be plain names")
                continue
            name = key.value
            if name in out:
                first = out[name][0].start_mark.line + 1
                self.error(key, f"duplicate key '{name}' (first given on line {first})")
                continue
            if name not in allowed:
                self.error(
                    key,
                    f"unknown key '{name}' in {what}{_did_you_mean(name, allowed)} "
                    f"(allowed: {', '.join(allowed)})",
                )
                continue
            out[name] = (key, value)
        return out

    def string(self, node: yaml.Node, what: str) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag != _NULL:
            if not node.value.strip():
                self.error(node, f"{what} must not be empty")
                return None
            return str(node.value)
        if isinstance(node, yaml.ScalarNode):
            self.error(node, f"{what} must not be empty")
        else:
            self.error(node, f"{what} must be a single text value, not a list or mapping")
        return None

    def strings(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.ScalarNode]] | None:
        """A list of strings; a single string is accepted as a list of one."""
        if isinstance(node, yaml.ScalarNode) and node.tag != _NULL:
            value = self.string(node, what)
            return None if value is None else [(value, node)]
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list, e.g. [a, b]")
            return None
        out: list[tuple[str, yaml.ScalarNode]] = []
        ok = True
        for item in node.value:
            value = self.string(item, f"each item of {what}")
            if value is None:
                ok = False
            else:
                assert isinstance(item, yaml.ScalarNode)
                out.append((value, item))
        return out if ok else None

    def choice(self, node: yaml.Node, choices: Sequence[str], what: str) -> str | None:
        value = self.string(node, what)
        if value is None:
            return None
        if value not in choices:
            self.error(
                node,
                f"{what} must be one of {', '.join(choices)}, not '{value}'"
                f"{_did_you_mean(value.lower(), choices)}",
            )
            return None
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL:
            return bool(yaml.safe_load(node.value))
        self.error(node, f"{what} must be true or false")
        return None


# --- term lists --------------------------------------------------------------------------


def _pattern_from_scalar(
    f: _File, node: yaml.Node, what: str, *, case_sensitive: bool, label: str | None
) -> Pattern | None:
    text = f.string(node, what)
    if text is None:
        return None
    assert isinstance(node, yaml.ScalarNode)
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
        f.error(
            node,
            f"{what}: write {stripped[1:-1]} without the inner quotes (every entry of a term "
            "list is already a phrase)",
        )
        return None
    if stripped.startswith("case:"):
        f.error(
            node,
            f"{what}: in a term list write {{term: {stripped[5:]}, case: sensitive}} "
            "instead of case:",
        )
        return None
    prefix = stripped.endswith("*")
    body = stripped[:-1] if prefix else stripped
    if "*" in body:
        f.error(node, f"{what}: '*' is only allowed at the end, as a whole-word prefix")
        return None
    try:
        pattern = make_pattern(body, case_sensitive=case_sensitive, prefix=prefix, label=label)
    except PatternError as exc:
        f.error(node, f"{what}: {exc}")
        return None
    if not case_sensitive and looks_like_acronym(body):
        f.warn(
            node,
            f"{what}: {body!r} looks like an acronym; without case: sensitive it also matches "
            f"{_other_cases(body)} — write {{term: {body}, case: sensitive}}",
        )
    return pattern


def _other_cases(text: str) -> str:
    forms = dict.fromkeys(f for f in (text.lower(), text.capitalize()) if f != text)
    return " and ".join(repr(f) for f in forms)


def _case(f: _File, node: yaml.Node | None, what: str) -> bool | None:
    if node is None:
        return False
    value = f.choice(node, CASE_VALUES, f"{what} case")
    return None if value is None else value == "sensitive"


def _list_entry(f: _File, node: yaml.Node, what: str) -> ListEntry | None:
    if isinstance(node, yaml.ScalarNode):
        pattern = _pattern_from_scalar(f, node, what, case_sensitive=False, label=None)
        return None if pattern is None else ListEntry(pattern.label, (pattern,))
    keys = f.mapping(node, ENTRY_KEYS, what)
    if keys is None:
        return None
    if "term" not in keys:
        f.error(node, f"{what} needs a 'term:' (its canonical name)")
        return None
    case = _case(f, keys["case"][1] if "case" in keys else None, what)
    if case is None:
        return None
    term_node = keys["term"][1]
    name = f.string(term_node, f"{what} term")
    if name is None:
        return None
    first = _pattern_from_scalar(f, term_node, what, case_sensitive=case, label=name.strip())
    patterns: list[Pattern | None] = [first]
    if "aliases" in keys:
        aliases = keys["aliases"][1]
        if not isinstance(aliases, yaml.SequenceNode):
            f.error(aliases, f"{what} aliases must be a list, e.g. [フィリピン, Pilipinas]")
            return None
        for alias in aliases.value:
            patterns.append(_alias(f, alias, f"alias of {name.strip()!r}", case, name.strip()))
    if any(p is None for p in patterns):
        return None
    return ListEntry(name.strip(), tuple(p for p in patterns if p is not None))


def _alias(f: _File, node: yaml.Node, what: str, case: bool, label: str) -> Pattern | None:
    if isinstance(node, yaml.ScalarNode):
        return _pattern_from_scalar(f, node, what, case_sensitive=case, label=label)
    keys = f.mapping(node, ALIAS_KEYS, what)
    if keys is None:
        return None
    if "term" not in keys:
        f.error(node, f"{what} needs a 'term:'")
        return None
    alias_case = _case(f, keys["case"][1] if "case" in keys else None, what)
    if alias_case is None:
        return None
    return _pattern_from_scalar(f, keys["term"][1], what, case_sensitive=alias_case, label=label)


def _term_list(f: _File, name: str, node: yaml.Node, what: str) -> TermList | None:
    if not isinstance(node, yaml.SequenceNode):
        f.error(node, f"{what} must be a list of terms, e.g. [radar*, \"patrol boats\"]")
        return None
    if not node.value:
        f.error(node, f"{what} is empty")
        return None
    entries: list[ListEntry] = []
    seen: dict[str, yaml.Node] = {}
    ok = True
    for item in node.value:
        entry = _list_entry(f, item, f"entry of {what}")
        if entry is None:
            ok = False
            continue
        if entry.name in seen:
            line = seen[entry.name].start_mark.line + 1
            f.error(item, f"{entry.name!r} is listed twice in {what} (first on line {line})")
            ok = False
            continue
        seen[entry.name] = item
        entries.append(entry)
    return TermList(name, tuple(entries)) if ok else None


# --- files -------------------------------------------------------------------------------


def _read(
    path: Path, errors: list[RuleError], warnings: list[RuleError]
) -> tuple[_File, yaml.Node | None, str] | None:
    """Read and compose one YAML file; returns (file, root node, version) or None on error."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        errors.append(RuleError(f"cannot read: {exc.strerror or exc}", path=path))
        return None
    version = hashlib.sha256(data).hexdigest()[:12]
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        errors.append(RuleError(f"not UTF-8 text (byte {exc.start}); save as UTF-8", path=path))
        return None
    f = _File(path, source, errors, warnings)
    try:
        root = _compose(source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        f.error(mark, f"invalid YAML: {problem}")
        return None
    except yaml.YAMLError as exc:
        f.error(None, f"invalid YAML: {exc}")
        return None
    return f, root, version


_FAST_LOADER: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)


def _compose(source: str) -> yaml.Node | None:
    """``yaml.compose`` with libyaml when PyYAML has it (15× faster: loading 1,000 rules
    took 1 s in pure Python), else in Python. libyaml's nodes carry the same marks (index,
    line and column in characters); a file it rejects, or that starts with a byte-order
    mark, is composed again in Python so that every error reads as it always has."""
    if _FAST_LOADER is not None and not source.startswith("\ufeff"):
        try:
            return yaml.compose(source, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass
    return yaml.compose(source, Loader=yaml.SafeLoader)


def _load_list(
    path: Path, errors: list[RuleError], warnings: list[RuleError]
) -> TermList | None:
    read = _read(path, errors, warnings)
    if read is None:
        return None
    f, root, _ = read
    name = path.stem
    if not _NAME.fullmatch(name):
        f.error(None, f"list name '{name}' can only use letters, digits, '_' and '-'; rename it")
        return None
    if root is None:
        f.error(None, "empty list file; write one entry per line, e.g. - Philippines")
        return None
    return _term_list(f, name, root, f"list '{name}'")


def _load_lists(
    directory: Path, errors: list[RuleError], warnings: list[RuleError]
) -> dict[str, TermList | None]:
    lists: dict[str, TermList | None] = {}
    if not directory.is_dir():
        return lists
    for path in sorted(directory.iterdir()):
        if path.suffix == ".yml":
            errors.append(RuleError(f"rename to {path.stem}.yaml (only .yaml is read)", path=path))
        elif path.suffix == ".yaml" and path.is_file():
            lists[path.stem] = _load_list(path, errors, warnings)
    return lists


def _parse_query(
    f: _File, node: yaml.Node, what: str, terms: dict[str, TermList | None],
    lists: dict[str, TermList | None], used_terms: set[str], *, positive: bool,
) -> tuple[str, Compiled] | None:
    text = f.string(node, what)
    if text is None:
        return None
    assert isinstance(node, yaml.ScalarNode)
    try:
        tree = q.parse_query(text)
    except q.QuerySyntaxError as exc:
        f.error_at(node, exc.offset, f"{what}: {exc.message}")
        return None
    result = compile_query(text, tree, terms=terms, lists=lists)
    used_terms.update(result.used_terms)
    for issue in result.errors:
        f.error_at(node, issue.offset, f"{what}: {issue.message}")
    for issue in result.warnings:
        f.warn_at(node, issue.offset, f"{what}: {issue.message}")
    if positive and q.can_match_without_terms(tree):
        f.error_at(
            node, 0,
            f"{what} matches entries that contain none of its terms (only NOT); add a "
            "positive term, e.g. a AND NOT b",
        )
        return None
    if result.node is None:
        return None
    return text, result.node


def _examples(f: _File, node: yaml.Node, rule_id: str) -> list[Example] | None:
    kinds = f.mapping(node, EXAMPLE_KINDS, "tests")
    if kinds is None:
        return None
    out: list[Example] = []
    ok = True
    for kind_name, (_, seq) in kinds.items():
        kind: ExampleKind = next(k for k in EXAMPLE_KINDS if k == kind_name)
        if isinstance(seq, yaml.ScalarNode) and seq.tag == _NULL:
            continue
        if not isinstance(seq, yaml.SequenceNode):
            f.error(seq, f"tests.{kind} must be a list of examples")
            ok = False
            continue
        for index, item in enumerate(seq.value):
            example = _example(f, item, rule_id, kind, index)
            if example is None:
                ok = False
            else:
                out.append(example)
    return out if ok else None


def _example(
    f: _File, node: yaml.Node, rule_id: str, kind: ExampleKind, index: int
) -> Example | None:
    what = f"tests.{kind}[{index}]"
    key = f"example:{rule_id}:{kind}:{index}"
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        title = f.string(node, what)
        return None if title is None else Example(kind, Entry(key=key, title=title), None, line)
    before = len(f.errors)
    keys = f.mapping(node, EXAMPLE_KEYS, what)
    if keys is None or len(f.errors) > before:
        return None
    values: dict[str, str] = {}
    category: tuple[str, ...] = ()
    ok = True
    for name, (_, value_node) in keys.items():
        if name == "category":
            items = f.strings(value_node, f"{what}.category")
            if items is None:
                ok = False
            else:
                category = tuple(v for v, _ in items)
            continue
        value = f.string(value_node, f"{what}.{name}")
        if value is None:
            ok = False
        else:
            values[name] = value
    if not ok:
        return None
    if not any(k in values for k in ("title", "summary", "content")) and not category:
        f.error(node, f"{what} needs a title, summary or content")
        return None
    entry = Entry(
        key=key,
        title=values.get("title", ""),
        summary=values.get("summary", ""),
        content=values.get("content", ""),
        author=values.get("author"),
        link=values.get("link"),
        categories=category,
        language=values.get("lang"),
    )
    return Example(kind, entry, values.get("feed"), line)


def _rule_id(f: _File, node: yaml.Node, path: Path) -> str | None:
    rule_id = f.string(node, "id")
    if rule_id is None:
        return None
    if not _KEBAB.fullmatch(rule_id):
        suggestion = re.sub(r"[^a-z0-9]+", "-", rule_id.lower()).strip("-")
        f.error(
            node,
            f"id '{rule_id}' must be kebab-case (lower-case letters, digits and single "
            f"hyphens), e.g. {suggestion or 'my-rule'}",
        )
    elif rule_id != path.stem:
        f.error(
            node,
            f"id '{rule_id}' does not match the file name: rename the file to "
            f"{rule_id}.yaml or set id: {path.stem}",
        )
    return rule_id


def _scope(f: _File, node: yaml.Node) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``scope:`` → (feeds, fields)."""
    feeds: tuple[str, ...] = ()
    fields: tuple[str, ...] = DEFAULT_FIELDS
    scope = f.mapping(node, SCOPE_KEYS, "scope")
    if scope is None:
        return feeds, fields
    if "feeds" in scope:
        feeds = tuple(v for v, _ in f.strings(scope["feeds"][1], "scope.feeds") or ())
    if "fields" in scope:
        chosen: list[str] = []
        for value, item in f.strings(scope["fields"][1], "scope.fields") or ():
            if value in q.TEXT_FIELDS:
                chosen.append(value)
            else:
                f.error(
                    item,
                    f"unknown field '{value}' in scope.fields{_did_you_mean(value, q.TEXT_FIELDS)} "
                    f"(fields: {', '.join(q.TEXT_FIELDS)})",
                )
        fields = tuple(chosen) or fields
    return feeds, fields


def _rule_terms(
    f: _File, node: yaml.Node
) -> tuple[dict[str, TermList | None], dict[str, yaml.ScalarNode]]:
    """``terms:`` → the term lists by name (None when broken) and their key nodes."""
    terms: dict[str, TermList | None] = {}
    keys: dict[str, yaml.ScalarNode] = {}
    if not isinstance(node, yaml.MappingNode):
        f.error(node, "terms must map names to lists, e.g. signal: [radar*, 供与]")
        return terms, keys
    for key_node, value_node in node.value:
        name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
        if not _NAME.fullmatch(name):
            f.error(key_node, f"term list name '{name}' can only use letters, digits, '_' and '-'")
            continue
        if name in terms:
            f.error(key_node, f"duplicate term list '{name}'")
            continue
        assert isinstance(key_node, yaml.ScalarNode)
        keys[name] = key_node
        terms[name] = _term_list(f, name, value_node, f"terms.{name}")
    return terms, keys


def _excludes(
    f: _File, node: yaml.Node, terms: dict[str, TermList | None],
    lists: dict[str, TermList | None], used_terms: set[str],
) -> list[tuple[str, str, Compiled]]:
    """``exclude:`` → (name, query text, compiled query) for each exclusion."""
    if not isinstance(node, yaml.MappingNode):
        f.error(node, "exclude must map names to queries, e.g. uk_acts: $uk_acts")
        return []
    out: list[tuple[str, str, Compiled]] = []
    seen: set[str] = set()
    for key_node, value_node in node.value:
        name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
        if not name or name in seen:
            f.error(key_node, f"exclusion names must be unique text, not {name!r}")
            continue
        seen.add(name)
        parsed = _parse_query(
            f, value_node, f"exclude.{name}", terms, lists, used_terms, positive=False
        )
        if parsed is not None:
            out.append((name, *parsed))
    return out


def _route(f: _File, node: yaml.Node) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``route:`` → (Slack channels, digest names)."""
    route = f.mapping(node, ROUTE_KEYS, "route")
    if route is None:
        return (), ()
    channels = (f.strings(route["slack"][1], "route.slack") or []) if "slack" in route else []
    for value, item in channels:
        if not _SLACK_CHANNEL.fullmatch(value):
            f.error(
                item,
                f"route.slack: '{value}' is not a Slack channel; write '#name' "
                "(lower case, quoted in YAML) or a channel ID such as C0123ABCD",
            )
    digests = (f.strings(route["digest"][1], "route.digest") or []) if "digest" in route else []
    return tuple(v for v, _ in channels), tuple(v for v, _ in digests)


def _load_rule(
    path: Path, lists: dict[str, TermList | None], errors: list[RuleError],
    warnings: list[RuleError],
) -> Rule | None:
    read = _read(path, errors, warnings)
    if read is None:
        return None
    f, root, version = read
    if root is None:
        f.error(None, "empty rule file; a rule needs at least id, title and query")
        return None
    keys = f.mapping(root, RULE_KEYS, "a rule")
    if keys is None:
        return None
    present = {k.value for k, _ in root.value if isinstance(k, yaml.ScalarNode)}
    for required in ("id", "title", "query"):
        if required not in present:
            f.error(root, f"missing required key '{required}'")

    def node(name: str) -> yaml.Node | None:
        return keys[name][1] if name in keys else None

    def read_opt(name: str, reader: Callable[[yaml.Node], _T]) -> _T | None:
        found = node(name)
        return None if found is None else reader(found)

    rule_id = read_opt("id", lambda n: _rule_id(f, n, path))
    title = read_opt("title", lambda n: f.string(n, "title"))
    description = read_opt("description", lambda n: _optional_string(f, n, "description"))
    status = read_opt("status", lambda n: f.choice(n, [s.value for s in RuleStatus], "status"))
    severity = read_opt(
        "severity", lambda n: f.choice(n, [s.value for s in Severity], "severity")
    )
    owner = read_opt("owner", lambda n: _optional_string(f, n, "owner"))
    references = read_opt("references", lambda n: f.strings(n, "references")) or []
    enabled = read_opt("enabled", lambda n: f.boolean(n, "enabled"))
    feeds, fields = read_opt("scope", lambda n: _scope(f, n)) or ((), DEFAULT_FIELDS)
    terms, term_keys = read_opt("terms", lambda n: _rule_terms(f, n)) or ({}, {})

    used_terms: set[str] = set()
    parsed = read_opt(
        "query",
        lambda n: _parse_query(f, n, "query", terms, lists, used_terms, positive=True),
    )
    excludes = read_opt("exclude", lambda n: _excludes(f, n, terms, lists, used_terms)) or []
    for name, key_node in term_keys.items():
        if name not in used_terms:
            f.warn(key_node, f"term list '{name}' is not used by the query or any exclusion")

    track, track_list = read_opt("track", lambda n: _track(f, n, terms, lists)) or (None, None)
    slack, digests = read_opt("route", lambda n: _route(f, n)) or ((), ())
    examples = read_opt("tests", lambda n: _examples(f, n, rule_id or path.stem)) or []

    if f.failed or parsed is None or rule_id is None or title is None:
        return None
    return Rule(
        id=rule_id,
        title=title.strip(),
        description=(description or "").strip(),
        status=RuleStatus(status) if status else RuleStatus.STABLE,
        severity=Severity(severity) if severity else Severity.MEDIUM,
        owner=owner,
        enabled=True if enabled is None else enabled,
        slack_channels=slack,
        digests=digests,
        track=track,
        version=version,
        path=path,
        query=parsed[0],
        compiled=parsed[1],
        references=tuple(v for v, _ in references),
        feeds=feeds,
        fields=fields,
        excludes=tuple((name, text) for name, text, _ in excludes),
        compiled_excludes=tuple((name, compiled) for name, _, compiled in excludes),
        track_list=track_list,
        examples=tuple(examples),
    )


def _optional_string(f: _File, node: yaml.Node, what: str) -> str | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
        return None
    return f.string(node, what)


def _track(
    f: _File, node: yaml.Node, terms: dict[str, TermList | None],
    lists: dict[str, TermList | None],
) -> tuple[str, TermList | None] | None:
    """``track: name`` names a shared list (``@name`` to be explicit) or ``$name`` terms."""
    name = f.string(node, "track")
    if name is None:
        return None
    bare = name.lstrip("@$")
    if name.startswith("$"):
        candidates = dict(terms)
    elif name.startswith("@"):
        candidates = dict(lists)
    else:
        candidates = {**terms, **lists}
    if bare not in candidates:
        f.error(
            node,
            f"track: no list named '{bare}'{_did_you_mean(bare, sorted(candidates))} "
            "(track names a list in rules/lists/ or under terms:)",
        )
        return None
    return bare, candidates[bare]


def load_rules(directory: Path) -> RuleSet:
    """Load ``directory/*.yaml`` (except feeds.yaml and digests.yaml) and ``lists/*.yaml``.

    Raises :class:`RuleLoadError` listing every problem in every file.
    """
    errors: list[RuleError] = []
    warnings: list[RuleError] = []
    if not directory.is_dir():
        raise RuleLoadError([RuleError("rules directory not found", path=directory)])
    lists = _load_lists(directory / LISTS_DIR, errors, warnings)
    rules: list[Rule] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name in RESERVED_FILES:
            continue
        if path.suffix == ".yml":
            errors.append(RuleError(f"rename to {path.stem}.yaml (only .yaml is read)", path=path))
        elif path.suffix == ".yaml":
            rule = _load_rule(path, lists, errors, warnings)
            if rule is not None:
                rules.append(rule)
    if errors:
        raise RuleLoadError(errors)
    loaded = tuple(t for t in lists.values() if t is not None)
    return RuleSet(tuple(rules), loaded, tuple(sorted(warnings, key=_error_order)))


def load_rule_file(
    path: Path, rules_dir: Path, *, warnings: list[RuleError] | None = None
) -> Rule:
    """One rule file, wherever it is (an edit not yet in ``rules_dir``), with the shared
    lists of ``rules_dir``. Raises :class:`RuleLoadError` with every problem in it; the
    warnings go to ``warnings`` when given."""
    errors: list[RuleError] = []
    warnings = [] if warnings is None else warnings
    lists = _load_lists(rules_dir / LISTS_DIR, errors, warnings)
    rule = _load_rule(path, lists, errors, warnings)
    if errors or rule is None:
        raise RuleLoadError(errors or [RuleError("not a rule", path=path)])
    return rule
