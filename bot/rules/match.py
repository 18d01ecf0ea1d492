"""Compiled queries and their evaluation against one entry.

``compile_query`` turns a syntax tree (``bot.rules.query``) into executable nodes, resolving
``$terms`` and ``@lists``. A :class:`Document` wraps one entry for one feed: it normalises each
field once (lazily) and caches every pattern search, so rules that share a term share the
work. Evaluation returns whether a node matched and the occurrences that made it match,
which become :class:`bot.model.Hit` values in the original text.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.model import Entry, Hit, field_text
from bot.rules import query as q
from bot.rules.terms import (
    Pattern,
    PatternError,
    TermList,
    find_all,
    looks_like_acronym,
    make_pattern,
    make_regex_pattern,
)
from bot.rules.text import Normalized, WordIndex, normalize

# Fields searched when a rule does not narrow them with ``scope.fields``. Author and link are
# left out on purpose: a byline or a URL slug is rarely what an analyst means by a mention.
DEFAULT_FIELDS: tuple[str, ...] = ("title", "summary", "content", "category")

# --- executable nodes --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leaf:
    """Any of ``patterns`` occurs. ``source`` is how the query wrote it (for explain)."""

    patterns: tuple[Pattern, ...]
    source: str


@dataclass(frozen=True, slots=True)
class AllOf:
    children: tuple[Compiled, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Compiled, ...]


@dataclass(frozen=True, slots=True)
class Negate:
    child: Compiled


@dataclass(frozen=True, slots=True)
class Proximity:
    left: Leaf
    right: Leaf
    distance: int
    ordered: bool


@dataclass(frozen=True, slots=True)
class InField:
    field: str
    child: Compiled


@dataclass(frozen=True, slots=True)
class FeedIs:
    """``feed:x``: the feed's name or one of its tags is ``x``."""

    name: str


@dataclass(frozen=True, slots=True)
class LangIs:
    """``lang:ja``: the entry's language is ``ja`` or a variant of it (``ja-JP``)."""

    code: str


Compiled = Leaf | AllOf | AnyOf | Negate | Proximity | InField | FeedIs | LangIs


@dataclass(frozen=True, slots=True)
class CompileIssue:
    """An error or warning at ``offset`` in the query string."""

    offset: int
    message: str


def _suggest(name: str, choices: Iterable[str], sigil: str) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean '{sigil}{close[0]}'?" if close else ""


class _Compiler:
    def __init__(
        self, query: str, terms: Mapping[str, TermList | None],
        lists: Mapping[str, TermList | None],
    ) -> None:
        self.query = query
        self.terms = terms
        self.lists = lists
        self.errors: list[CompileIssue] = []
        self.warnings: list[CompileIssue] = []
        self.used_terms: set[str] = set()
        self.used_lists: set[str] = set()

    def source(self, node: q.Node) -> str:
        return self.query[node.pos : node.end]

    def leaf(self, node: q.Term | q.TermRef | q.ListRef) -> Leaf | None:
        if isinstance(node, q.Term):
            try:
                if node.regex:
                    pattern = make_regex_pattern(node.text, case_sensitive=node.case_sensitive)
                else:
                    pattern = make_pattern(
                        node.text, case_sensitive=node.case_sensitive, prefix=node.prefix
                    )
            except PatternError as exc:
                self.errors.append(CompileIssue(node.pos, str(exc)))
                return None
            if node.regex:
                return Leaf((pattern,), self.source(node))
            if not node.case_sensitive and looks_like_acronym(node.text):
                self.warnings.append(CompileIssue(
                    node.pos,
                    f"{node.text!r} looks like an acronym: without case:{node.text} it also "
                    f"matches {node.text.lower()!r}",
                ))
            if node.text in ("and", "or", "not") and not node.quoted:
                self.warnings.append(CompileIssue(
                    node.pos,
                    f"lower-case {node.text!r} is searched as a word; operators are upper "
                    f"case ({node.text.upper()})",
                ))
            return Leaf((pattern,), self.source(node))
        if isinstance(node, q.TermRef):
            table, sigil, where = self.terms, "$", "under terms: in this rule"
            self.used_terms.add(node.name)
        else:
            table, sigil, where = self.lists, "@", "in rules/lists/<name>.yaml"
            self.used_lists.add(node.name)
        if node.name not in table:
            kind = "term list" if sigil == "$" else "list"
            self.errors.append(CompileIssue(
                node.pos,
                f"unknown {kind} '{sigil}{node.name}'{_suggest(node.name, table, sigil)} "
                f"({kind}s are defined {where})",
            ))
            return None
        found = table[node.name]
        if found is None:  # defined but broken: its own error is already reported
            return None
        return Leaf(found.patterns, self.source(node))

    def near_operand(self, node: q.Node) -> Leaf | None:
        if isinstance(node, q.Term | q.TermRef | q.ListRef):
            return self.leaf(node)
        if isinstance(node, q.Or):
            parts = [self.near_operand(c) for c in node.children]
            if any(p is None for p in parts):
                return None
            patterns = tuple(p for leaf in parts if leaf is not None for p in leaf.patterns)
            return Leaf(patterns, self.source(node))
        self.errors.append(CompileIssue(
            node.pos,
            "NEAR/ONEAR joins terms, $terms, @lists or (a OR b); put AND, NOT and field: "
            "outside it, e.g. title:(a NEAR/5 b)",
        ))
        return None

    def compile(self, node: q.Node) -> Compiled | None:
        if isinstance(node, q.Term | q.TermRef | q.ListRef):
            return self.leaf(node)
        if isinstance(node, q.And | q.Or):
            children = [self.compile(c) for c in node.children]
            if any(c is None for c in children):
                return None
            done = tuple(c for c in children if c is not None)
            return AllOf(done) if isinstance(node, q.And) else AnyOf(done)
        if isinstance(node, q.Not):
            child = self.compile(node.child)
            return None if child is None else Negate(child)
        if isinstance(node, q.Near):
            left = self.near_operand(node.left)
            right = self.near_operand(node.right)
            if left is None or right is None:
                return None
            return Proximity(left, right, node.distance, node.ordered)
        # FieldScope
        if node.field in q.META_FIELDS:
            child_node = node.child
            if not isinstance(child_node, q.Term) or child_node.prefix:
                self.errors.append(CompileIssue(
                    node.child.pos,
                    f"{node.field}: takes one plain word, e.g. "
                    f"{'feed:mod-ja' if node.field == 'feed' else 'lang:ja'}",
                ))
                return None
            value = child_node.text
            return FeedIs(value) if node.field == "feed" else LangIs(value.casefold())
        child = self.compile(node.child)
        return None if child is None else InField(node.field, child)


@dataclass(frozen=True, slots=True)
class CompileResult:
    node: Compiled | None
    errors: tuple[CompileIssue, ...]
    warnings: tuple[CompileIssue, ...]
    used_terms: frozenset[str]
    used_lists: frozenset[str]


def compile_query(
    query: str,
    tree: q.Node,
    *,
    terms: Mapping[str, TermList | None],
    lists: Mapping[str, TermList | None],
) -> CompileResult:
    """Resolve names and build patterns; ``node`` is None when there are errors."""
    compiler = _Compiler(query, terms, lists)
    node = compiler.compile(tree)
    return CompileResult(
        node if not compiler.errors else None,
        tuple(compiler.errors),
        tuple(compiler.warnings),
        frozenset(compiler.used_terms),
        frozenset(compiler.used_lists),
    )


# --- evaluation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Occurrence:
    """A pattern found in ``field``, ``[start, end)`` in its normalised text."""

    field: str
    casefold: bool
    start: int
    end: int
    label: str


class Document:
    """One entry seen from one feed, prepared for matching many rules."""

    def __init__(self, entry: Entry, *, feed_name: str, feed_tags: Iterable[str] = ()) -> None:
        self.entry = entry
        self.feed_name = feed_name
        self.feed_tags = frozenset(feed_tags)
        self._norm: dict[tuple[str, bool], Normalized] = {}
        self._words: dict[tuple[str, bool], WordIndex] = {}
        self._found: dict[tuple[str, tuple[str, bool, bool, bool]], list[tuple[int, int]]] = {}

    def normalized(self, field: str, casefold: bool) -> Normalized:
        key = (field, casefold)
        norm = self._norm.get(key)
        if norm is None:
            norm = self._norm[key] = normalize(field_text(self.entry, field), casefold=casefold)
        return norm

    def words(self, field: str, casefold: bool) -> WordIndex:
        key = (field, casefold)
        index = self._words.get(key)
        if index is None:
            index = self._words[key] = WordIndex(self.normalized(field, casefold).text)
        return index

    def find(self, pattern: Pattern, field: str) -> list[Occurrence]:
        key = (field, pattern.key)
        spans = self._found.get(key)
        if spans is None:
            casefold = not pattern.case_sensitive
            text = self.normalized(field, casefold).text
            spans = self._found[key] = find_all(pattern, text) if text else []
        return [
            Occurrence(field, not pattern.case_sensitive, s, e, pattern.label) for s, e in spans
        ]

    def hit(self, occ: Occurrence) -> Hit:
        start, end = self.normalized(occ.field, occ.casefold).original_span(occ.start, occ.end)
        return Hit(occ.field, start, end, occ.label)

    def word_span(self, occ: Occurrence) -> tuple[int, int]:
        index = self.words(occ.field, occ.casefold)
        return index.number(occ.start), index.number(occ.end - 1)


Outcome = tuple[bool, list[Occurrence]]


def evaluate(node: Compiled, doc: Document, fields: tuple[str, ...]) -> Outcome:
    """Whether ``node`` matches ``doc`` in ``fields``, and the occurrences that made it so.

    OR keeps the occurrences of every branch that matched (all of them are highlighted);
    NOT contributes none.
    """
    if isinstance(node, Leaf):
        found = [o for f in fields for p in node.patterns for o in doc.find(p, f)]
        return bool(found), found
    if isinstance(node, AllOf):
        occs: list[Occurrence] = []
        for child in node.children:
            ok, found = evaluate(child, doc, fields)
            if not ok:
                return False, []
            occs.extend(found)
        return True, occs
    if isinstance(node, AnyOf):
        occs = []
        matched = False
        for child in node.children:
            ok, found = evaluate(child, doc, fields)
            if ok:
                matched = True
                occs.extend(found)
        return matched, occs
    if isinstance(node, Negate):
        ok, _ = evaluate(node.child, doc, fields)
        return not ok, []
    if isinstance(node, InField):
        return evaluate(node.child, doc, (node.field,))
    if isinstance(node, FeedIs):
        return node.name == doc.feed_name or node.name in doc.feed_tags, []
    if isinstance(node, LangIs):
        lang = (doc.entry.language or "").casefold().replace("_", "-")
        return lang == node.code or lang.startswith(node.code + "-"), []
    return _proximity(node, doc, fields)


def _proximity(node: Proximity, doc: Document, fields: tuple[str, ...]) -> Outcome:
    occs: list[Occurrence] = []
    for f in fields:
        lefts = [o for p in node.left.patterns for o in doc.find(p, f)]
        if not lefts:
            continue
        rights = [o for p in node.right.patterns for o in doc.find(p, f)]
        for a in lefts:
            a_first, a_last = doc.word_span(a)
            for b in rights:
                b_first, b_last = doc.word_span(b)
                if node.ordered:
                    if b.start <= a.start:
                        continue
                    between = b_first - a_last - 1
                elif a.start <= b.start:
                    between = b_first - a_last - 1
                else:
                    between = a_first - b_last - 1
                if between <= node.distance:
                    occs.extend((a, b))
    return bool(occs), occs
