"""Compiled rules and the set of them that the bot matches entries against."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bot.errors import RuleError
from bot.model import Entry, Hit, Match, RuleStatus, Severity
from bot.rules.match import DEFAULT_FIELDS, Compiled, Document, Occurrence, evaluate
from bot.rules.query import TEXT_FIELDS
from bot.rules.terms import TermList

if TYPE_CHECKING:
    from bot.rules.engine import Engine

ExampleKind = Literal["match", "no_match", "todo_match", "todo_no_match"]
EXAMPLE_KINDS: tuple[ExampleKind, ...] = ("match", "no_match", "todo_match", "todo_no_match")


@dataclass(frozen=True, slots=True)
class Example:
    """One embedded test: the entry it builds and, optionally, the feed it pretends to be from.

    Without ``feed`` the example ignores ``scope.feeds`` (it tests the query, not the routing).
    """

    kind: ExampleKind
    entry: Entry
    feed: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one rule made of one entry: the answer and the reasons, for ``explain``/examples."""

    matched: bool
    query_matched: bool
    excluded_by: tuple[str, ...]
    hits: tuple[Hit, ...]


_FIELD_ORDER = {name: i for i, name in enumerate(TEXT_FIELDS)}

# A hit as a plain tuple: (field index in TEXT_FIELDS, start, end, term). Tuples sort in
# reading order and hash in C, so the engine works with these and makes Hit objects last.
HitKey = tuple[int, int, int, str]


def _uncovered(keys: list[HitKey]) -> list[HitKey]:
    """``keys`` (sorted by field, start, longest first) without those strictly inside the
    span of an earlier key (same field, larger span)."""
    kept: list[HitKey] = []
    field = -1
    reach = -1  # the furthest end among hits with an earlier, different span
    group_reach = -1
    span: tuple[int, int] | None = None
    for key in keys:
        f, start, end, _ = key
        if f != field:
            field, reach, group_reach, span = f, -1, -1, None
        if (start, end) != span:
            reach = max(reach, group_reach)
            group_reach = -1
            span = (start, end)
        if reach < end:
            kept.append(key)
        group_reach = max(group_reach, end)
    return kept


def _longest_first(key: HitKey) -> tuple[int, int, int, str]:
    return (key[0], key[1], -key[2], key[3])


def ordered_hit_keys(keys: Iterable[HitKey], tracked: frozenset[str] = frozenset()
                     ) -> list[HitKey]:
    """Unique hits in reading order, without those inside a longer hit (see
    :func:`sorted_hits`)."""
    unique = sorted(keys)
    # Nearly always no two hits overlap, and then none is inside another. In this order a
    # hit that overlaps an earlier one overlaps the one just before it, so checking
    # neighbours is enough (a repeated hit, or two on one span, also take the long way).
    if unique:
        prev = unique[0]
        for key in unique[1:]:
            if key[1] < prev[2] and key[0] == prev[0]:
                break
            prev = key
        else:
            return unique
    unique = sorted(set(unique))
    ordered = sorted(unique, key=_longest_first)
    if not tracked:
        kept = set(_uncovered(ordered))
    else:
        plain = {k for k in _uncovered(ordered) if k[3] not in tracked}
        on_list = set(_uncovered([k for k in ordered if k[3] in tracked]))
        kept = plain | on_list
    return [k for k in unique if k in kept]


def sorted_hits(hits: Iterable[Hit], tracked: frozenset[str] = frozenset()) -> tuple[Hit, ...]:
    """Unique hits in reading order, without those inside a longer hit.

    ``政府安全保障能力強化支援`` also contains the term ``安全保障能力強化支援``; only the
    longer one is kept, so highlights do not nest and ``track`` does not count ``外務大臣``
    inside ``英外務大臣``. A hit on a tracked list entry is dropped only inside another
    tracked hit.
    """
    keys = ordered_hit_keys(((_FIELD_ORDER[h.field], h.start, h.end, h.term) for h in hits),
                            tracked)
    return tuple(Hit(TEXT_FIELDS[f], start, end, term) for f, start, end, term in keys)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule file, compiled. ``version`` is the first 12 hex digits of the file's SHA-256."""

    id: str
    title: str
    description: str
    status: RuleStatus
    severity: Severity
    owner: str | None
    enabled: bool
    slack_channels: tuple[str, ...]
    digests: tuple[str, ...]
    track: str | None
    version: str
    path: Path
    query: str
    compiled: Compiled = field(repr=False, compare=False)
    references: tuple[str, ...] = ()
    feeds: tuple[str, ...] = ()  # scope.feeds: feed names or tags; empty means every feed
    fields: tuple[str, ...] = DEFAULT_FIELDS  # scope.fields
    excludes: tuple[tuple[str, str], ...] = ()  # (name, query) as written
    compiled_excludes: tuple[tuple[str, Compiled], ...] = field(
        default=(), repr=False, compare=False
    )
    track_list: TermList | None = field(default=None, repr=False, compare=False)
    examples: tuple[Example, ...] = field(default=(), repr=False)

    def in_scope(self, feed_name: str, feed_tags: Iterable[str] = ()) -> bool:
        """Whether ``scope.feeds`` lets this rule see entries of this feed."""
        if not self.feeds:
            return True
        wanted = set(self.feeds)
        return feed_name in wanted or not wanted.isdisjoint(feed_tags)

    def evaluate(self, doc: Document) -> Evaluation:
        """Run the query and every exclusion (ignores ``enabled`` and ``scope.feeds``)."""
        ok, occs = evaluate(self.compiled, doc, self.fields)
        if not ok:
            return Evaluation(False, False, (), ())
        excluded = tuple(
            name for name, node in self.compiled_excludes if evaluate(node, doc, self.fields)[0]
        )
        tracked: frozenset[str] = frozenset()
        if self.track_list is not None:
            occs = occs + self._track_occurrences(doc)
            tracked = self.track_list.names
        hits = sorted_hits((doc.hit(o) for o in occs), tracked)
        return Evaluation(not excluded, True, excluded, hits)

    def _track_occurrences(self, doc: Document) -> list[Occurrence]:
        assert self.track_list is not None
        return [o for f in self.fields for p in self.track_list.patterns for o in doc.find(p, f)]

    def match(
        self, entry: Entry, *, feed_name: str, feed_tags: Iterable[str] = ()
    ) -> Match | None:
        """This rule's match for ``entry`` (honouring scope, not ``enabled``), or None."""
        tags = tuple(feed_tags)
        if not self.in_scope(feed_name, tags):
            return None
        result = self.evaluate(Document(entry, feed_name=feed_name, feed_tags=tags))
        return Match(self.id, self.version, result.hits) if result.matched else None

    def tracked(self, hits: Iterable[Hit]) -> tuple[str, ...]:
        """Canonical names of ``track`` list entries among ``hits``, in order of appearance."""
        if self.track_list is None:
            return ()
        names = self.track_list.names
        seen: dict[str, None] = {}
        for hit in hits:
            if hit.term in names:
                seen.setdefault(hit.term, None)
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every rule in the rules directory, sorted by id, with the shared lists they use.

    ``warnings`` are lint findings that do not stop loading (an acronym without ``case:``).
    """

    rules: tuple[Rule, ...] = ()
    lists: tuple[TermList, ...] = ()
    warnings: tuple[RuleError, ...] = ()
    _by_id: dict[str, Rule] = field(init=False, repr=False, compare=False)
    _engine: list[Engine] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.rules, key=lambda r: r.id))
        object.__setattr__(self, "rules", ordered)
        object.__setattr__(self, "_by_id", {r.id: r for r in ordered})
        object.__setattr__(self, "_engine", [])

    @property
    def engine(self) -> Engine:
        """Every rule compiled together (built on first use, then kept)."""
        if not self._engine:
            from bot.rules.engine import Engine

            self._engine.append(Engine(self.rules))
        return self._engine[0]

    def get(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)

    def get_list(self, name: str) -> TermList | None:
        return next((t for t in self.lists if t.name == name), None)

    def match(
        self, entry: Entry, *, feed_name: str, feed_tags: Iterable[str] = ()
    ) -> list[Match]:
        """Matches of every enabled rule whose scope admits this feed, in rule-id order.

        One pass finds every term of every rule (:mod:`bot.rules.engine`); only the rules
        whose terms occurred are evaluated.
        """
        return self.engine.match(entry, feed_name=feed_name, feed_tags=feed_tags)

    def match_slowly(
        self, entry: Entry, *, feed_name: str, feed_tags: Iterable[str] = ()
    ) -> list[Match]:
        """The same answer as :meth:`match`, one rule at a time (the reference, for tests)."""
        tags = tuple(feed_tags)
        doc = Document(entry, feed_name=feed_name, feed_tags=tags)
        out: list[Match] = []
        for rule in self.rules:
            if not rule.enabled or not rule.in_scope(feed_name, tags):
                continue
            result = rule.evaluate(doc)
            if result.matched:
                out.append(Match(rule.id, rule.version, result.hits))
        return out

    def tracked(self, matches: Iterable[Match]) -> tuple[tuple[str, str], ...]:
        """(rule id, member) for each ``track`` list member named in ``matches``."""
        out: list[tuple[str, str]] = []
        for m in matches:
            rule = self.get(m.rule_id)
            if rule is not None:
                out.extend((rule.id, member) for member in rule.tracked(m.hits))
        return tuple(out)

    def match_text(self, title: str, *, summary: str = "", feed_name: str = "test") -> list[str]:
        """Ids of the rules an entry with this title (and summary) matches; for tests."""
        entry = Entry(key="text", title=title, summary=summary)
        return [m.rule_id for m in self.match(entry, feed_name=feed_name)]
