"""Every rule compiled together: one multi-pattern pass per field, then every rule's query
decided at once with bit operations, and Python work only for the rules that matched.

DESIGN.md ("Rules"): matching cost grows with the text, not with the number of rules.

    entry ─ normalise each field once ─ Aho-Corasick over all literal terms (+ RE2 regexes)
          ─ boundary checks ─ occurrences by (search, field)
          ─ for each term found: OR its rule bits into a few accumulators
          ─ AND the accumulators: the rules whose query holds (or may hold)
          ─ exact check of the few that may hold (NEAR, feed:, lang:, …) ─ exclusions
          ─ hits only for the rules that matched

Each query is compiled to *necessary clauses* in conjunctive normal form: ``a AND (b OR
title:c)`` needs a term of ``a`` and a term of ``b`` or ``c``-in-the-title. Clause *j* of
every rule is one bit of accumulator *j* (bit *i* for rule *i*), so one pass over the terms
an entry contains sets, for every rule at once, which of its clauses hold; a rule whose
clauses all hold, and whose top-level ``NOT`` terms are all absent, is decided by ANDing a
handful of Python integers. When the clauses say everything about the query (AND, OR,
terms, fields, a top-level NOT of terms) the answer is exact; otherwise (NEAR, ``feed:``,
``lang:``, a NOT deeper down) they are necessary conditions and the rule's compiled test
(generated Python, over the set of terms present) makes the final decision. Exclusions
are compiled the same way, in layers of their own.

The results are exactly those of :func:`bot.rules.match.evaluate`; tests check the two
against each other on the shipped rules and on bench/match.py's generated rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import ahocorasick_rs

from bot.model import Entry, Hit, Match
from bot.rules.match import (
    AllOf,
    AnyOf,
    Compiled,
    FeedIs,
    InField,
    LangIs,
    Leaf,
    Negate,
    Proximity,
    field_text,
)
from bot.rules.query import TEXT_FIELDS
from bot.rules.ruleset import HitKey, Rule, ordered_hit_keys
from bot.rules.terms import Pattern, compiled_regex
from bot.rules.text import Normalized, WordIndex, is_word_char, normalize, word_chars

_FIELD_INDEX = {name: i for i, name in enumerate(TEXT_FIELDS)}
_SHIFT = 3  # a found term's key is ``sid << _SHIFT | field index``
assert len(TEXT_FIELDS) <= 1 << _SHIFT
# The field indexes in a field mask, for every mask.
_FIELDS_IN = tuple(
    tuple(fi for fi in range(len(TEXT_FIELDS)) if mask >> fi & 1)
    for mask in range(1 << len(TEXT_FIELDS))
)

MAX_CLAUSES = 6  # clauses kept per query; a query with more is decided by its test
MAX_PRODUCT = 16  # an OR distributed over ANDs yields at most this many clauses

Test = Callable[["Scan"], bool]
Hits = Callable[["Scan"], list[HitKey]]


@dataclass(frozen=True, slots=True)
class _Search:
    """One distinct search (a pattern's text, case, prefix and regex flag)."""

    pattern: Pattern
    casefold: bool


# (search id, left-bounded, right-bounded, prefix, exact text for a case-sensitive pattern)
_Value = tuple[int, bool, bool, bool, str | None]


@dataclass(frozen=True, slots=True)
class _Automaton:
    ac: ahocorasick_rs.AhoCorasick
    values: list[tuple[_Value, ...]]  # by pattern index


@dataclass(frozen=True, slots=True)
class _Near:
    """A compiled NEAR/ONEAR: each side's searches as (sid, label, casefold), its fields."""

    left: tuple[tuple[int, str, bool], ...]
    right: tuple[tuple[int, str, bool], ...]
    distance: int
    ordered: bool
    fields: tuple[int, ...]


# --- necessary clauses -------------------------------------------------------------------

Literal = tuple[int, int]  # (sid, field mask): the search occurs in one of these fields
Clause = frozenset[Literal]  # true when any of its literals is


@dataclass(frozen=True, slots=True)
class _Cnf:
    """``node ⇒ every clause holds and no literal of negs does``; ``exact`` when ⇔."""

    clauses: tuple[Clause, ...]
    negs: frozenset[Literal]
    exact: bool


_NOTHING = _Cnf((), frozenset(), False)  # nothing known: the test decides


@dataclass(slots=True)
class _Layer:
    """One set of accumulators: clause slots, one slot for negated terms, and the rules (as
    bit positions) that belong to it."""

    slots: list[int]  # global accumulator indexes of the clause slots
    neg: int  # global accumulator index of the negated-terms slot
    members: int = 0
    exact: int = 0


@dataclass(frozen=True, slots=True)
class _Program:
    """One rule, compiled for the engine."""

    rule: Rule
    test: Test | None  # None when the clauses decide the query exactly
    excludes: tuple[Test, ...]
    groups: tuple[int, ...]  # groups whose every occurrence is a hit of a match
    extra: Hits | None  # the rest of the hits: NEAR pairs, terms of an AND inside an OR
    tracked: frozenset[str]  # the track list's canonical names


class Scan:
    """One entry from one feed, searched once for every pattern of every rule."""

    __slots__ = ("engine", "entry", "feed_name", "feed_tags", "norms", "spans", "fields_of",
                 "_present", "_groups", "_labelled", "_original", "_words", "_hit_objects")

    def __init__(self, engine: Engine, entry: Entry, feed_name: str,
                 feed_tags: frozenset[str]) -> None:
        self.engine = engine
        self.entry = entry
        self.feed_name = feed_name
        self.feed_tags = feed_tags
        self.norms: dict[tuple[int, bool], Normalized] = {}
        self.spans: dict[int, list[tuple[int, int]]] = {}  # sid << 3 | field → spans
        self.fields_of: dict[int, int] = {}  # sid → mask of the fields it occurs in
        self._present: dict[int, set[int]] = {}
        self._groups: dict[int, list[HitKey]] = {}
        self._labelled: dict[tuple[int, str], list[HitKey]] = {}  # every field
        self._original: dict[int, list[tuple[int, int]]] = {}
        self._words: dict[tuple[int, bool], WordIndex] = {}
        self._hit_objects: dict[HitKey, Hit] = {}

    def present(self, mask: int) -> set[int]:
        """The searches found in any field of ``mask``."""
        found = self._present.get(mask)
        if found is None:
            found = self._present[mask] = {
                sid for sid, fields in self.fields_of.items() if fields & mask}
        return found

    def words(self, fi: int, casefold: bool) -> WordIndex:
        key = (fi, casefold)
        index = self._words.get(key)
        if index is None:
            index = self._words[key] = WordIndex(self.norms[key].text)
        return index

    def original(self, key: int) -> list[tuple[int, int]]:
        """The spans of found term ``key`` in the original text of its field."""
        spans = self._original.get(key)
        if spans is None:
            sid, fi = key >> _SHIFT, key & 7
            norm = self.norms[(fi, self.engine.searches[sid].casefold)]
            spans = self._original[key] = [norm.original_span(s, e) for s, e in self.spans[key]]
        return spans

    def group(self, gid: int) -> list[HitKey]:
        """Hit keys of every occurrence of a group of patterns (terms of a rule's query that
        need no condition, its track list)."""
        found = self._groups.get(gid)
        if found is None:
            sids, labels, mask = self.engine.groups[gid]
            found = []
            fields_of = self.fields_of
            cache = self._labelled
            for sid in sids.intersection(self.present(mask)):
                for label in labels[sid]:
                    keys = cache.get((sid, label))
                    if keys is None:
                        keys = cache[(sid, label)] = [
                            (fi, s, e, label) for fi in _FIELDS_IN[fields_of[sid]]
                            for s, e in self.original(sid << _SHIFT | fi)]
                    if fields_of[sid] & ~mask:
                        keys = [k for k in keys if mask >> k[0] & 1]
                    found += keys
            self._groups[gid] = found
        return found

    def hit_objects(self, keys: list[HitKey]) -> tuple[Hit, ...]:
        cache = self._hit_objects
        out = []
        for key in keys:
            hit = cache.get(key)
            if hit is None:
                hit = cache[key] = Hit(TEXT_FIELDS[key[0]], key[1], key[2], key[3])
            out.append(hit)
        return tuple(out)


class Engine:
    """All rules' patterns in two automata (case-folded and exact) plus the regexes, and
    every rule's query as clause bits."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.searches: list[_Search] = []
        self._sid_by_key: dict[tuple[str, bool, bool, bool], int] = {}
        # Groups of (sid, label) in a field mask, shared by the rules that use them.
        self.groups: list[tuple[frozenset[int], dict[int, tuple[str, ...]], int]] = []
        self._gid_by_key: dict[tuple[frozenset[tuple[int, str]], int], int] = {}
        self.fields_used = 0
        # How many rules use each search: a term many rules share is a common word, so a
        # clause of rare terms is the one to keep when a query has too many.
        self.uses: list[int] = []
        for rule in rules:
            for sid in {self.sid(p) for p in _rule_patterns(rule)}:
                self.uses += [0] * (sid + 1 - len(self.uses))
                self.uses[sid] += 1
        codegen = _Codegen(self)
        self._query = _Layer([], 0)
        self._layers: list[_Layer] = []  # exclusion layers: the n-th exclusion of each rule
        self._n_slots = 0
        # sid → [(field mask, accumulator, rule bits)]
        contributions: dict[int, dict[tuple[int, int], int]] = {}
        self._init: list[int] = []
        self.programs: list[_Program] = []
        layered: list[tuple[_Layer, int, _Cnf]] = []
        for index, rule in enumerate(rules):
            fm = _mask(rule.fields)
            cnf = self._cnf(rule.compiled, fm)
            layered.append((self._query, index, cnf))
            for n, (_, node) in enumerate(rule.compiled_excludes):
                while len(self._layers) <= n:
                    self._layers.append(_Layer([], 0))
                layered.append((self._layers[n], index, self._cnf(node, fm)))
            self.programs.append(codegen.program(rule, test=not cnf.exact))
        for layer in (self._query, *self._layers):
            self._allocate(layer, [c for lay, _, c in layered if lay is layer])
        for layer, index, cnf in layered:
            bit = 1 << index
            layer.members |= bit
            if cnf.exact:
                layer.exact |= bit
            for j, slot in enumerate(layer.slots):
                if j >= len(cnf.clauses):
                    self._init[slot] |= bit  # no j-th clause: vacuously true
                    continue
                for sid, mask in cnf.clauses[j]:
                    per_sid = contributions.setdefault(sid, {})
                    per_sid[(mask, slot)] = per_sid.get((mask, slot), 0) | bit
            for sid, mask in cnf.negs:
                per_sid = contributions.setdefault(sid, {})
                per_sid[(mask, layer.neg)] = per_sid.get((mask, layer.neg), 0) | bit
        # By sid: (field mask, accumulator, rule bits) for every clause a search is in.
        self._contributions: list[tuple[tuple[int, int, int], ...]] = [
            tuple((mask, slot, bits) for (mask, slot), bits in contributions.get(sid, {}).items())
            for sid in range(len(self.searches))
        ]
        codegen.finish()
        self.rules = tuple(rules)
        self._enabled = sum(1 << i for i, r in enumerate(rules) if r.enabled)
        self._scoped = [(1 << i, frozenset(r.feeds)) for i, r in enumerate(rules) if r.feeds]
        self._unscoped = sum(1 << i for i, r in enumerate(rules) if not r.feeds)
        self._scope_cache: dict[tuple[str, frozenset[str]], int] = {}
        self.fields = _FIELDS_IN[self.fields_used]
        # One automaton over case-folded keys finds every literal; a case-sensitive pattern
        # is then compared with the exact text (the two share offsets when folding keeps the
        # length, which is nearly always). The second automaton is for the other case.
        self._all = self._automaton(exact_too=True)
        self._exact = self._automaton(exact_too=False)
        self._odd = self._automaton(exact_too=False, odd_only=True)
        self._regexes = [(sid, s) for sid, s in enumerate(self.searches) if s.pattern.regex]
        self._needs_cs = any(not s.casefold for s in self.searches)
        self._word = word_chars()

    # --- compiling ---------------------------------------------------------------------

    def sid(self, pattern: Pattern) -> int:
        sid = self._sid_by_key.get(pattern.key)
        if sid is None:
            sid = self._sid_by_key[pattern.key] = len(self.searches)
            self.searches.append(_Search(pattern, not pattern.case_sensitive))
        return sid

    def group(self, patterns: Iterable[Pattern], mask: int) -> int:
        """The id of the group of ``patterns`` (as (sid, label)) in the fields of ``mask``."""
        self.fields_used |= mask
        members = frozenset((self.sid(p), p.label) for p in patterns)
        key = (members, mask)
        gid = self._gid_by_key.get(key)
        if gid is None:
            labels: dict[int, list[str]] = {}
            for sid, label in sorted(members):
                labels.setdefault(sid, []).append(label)
            gid = self._gid_by_key[key] = len(self.groups)
            self.groups.append((frozenset(labels), {s: tuple(v) for s, v in labels.items()},
                                mask))
        return gid

    def _literals(self, patterns: Iterable[Pattern], mask: int) -> Clause:
        self.fields_used |= mask
        return frozenset((self.sid(p), mask) for p in patterns)

    def _cost(self, clause: Clause) -> int:
        """How often a clause is likely to hold: the rules sharing its terms (a term many
        rules use is a common word), so the rarest clauses are the ones kept."""
        return sum(self.uses[sid] + 1 for sid, _ in clause)

    def _cnf(self, node: Compiled, mask: int) -> _Cnf:
        cnf = self._cnf_of(node, mask)
        clauses = tuple(dict.fromkeys(cnf.clauses))
        exact = cnf.exact
        if len(clauses) > MAX_CLAUSES:
            clauses = tuple(sorted(clauses, key=self._cost)[:MAX_CLAUSES])
            exact = False
        return _Cnf(clauses, cnf.negs, exact)

    def _cnf_of(self, node: Compiled, mask: int) -> _Cnf:
        if isinstance(node, Leaf):
            return _Cnf((self._literals(node.patterns, mask),), frozenset(), True)
        if isinstance(node, InField):
            return self._cnf_of(node.child, 1 << _FIELD_INDEX[node.field])
        if isinstance(node, AllOf):
            parts = [self._cnf_of(c, mask) for c in node.children]
            return _Cnf(tuple(c for p in parts for c in p.clauses),
                        frozenset().union(*(p.negs for p in parts)),
                        all(p.exact for p in parts))
        if isinstance(node, AnyOf):
            parts = [self._cnf_of(c, mask) for c in node.children]
            if any(not p.clauses for p in parts):
                return _NOTHING  # a branch needs no term: nothing is necessary
            size = 1
            for p in parts:
                size *= len(p.clauses)
            if size <= MAX_PRODUCT and all(p.exact and not p.negs for p in parts):
                return _Cnf(tuple(frozenset().union(*combo)
                                  for combo in product(*(p.clauses for p in parts))),
                            frozenset(), True)
            # Each branch needs its rarest clause, so the OR needs one of them.
            return _Cnf((frozenset().union(*(min(p.clauses, key=self._cost) for p in parts)),),
                        frozenset(), False)
        if isinstance(node, Negate):
            inner = self._cnf_of(node.child, mask)
            if inner.exact and len(inner.clauses) == 1 and not inner.negs:
                return _Cnf((), inner.clauses[0], True)
            return _NOTHING
        if isinstance(node, Proximity):
            return _Cnf((self._literals(node.left.patterns, mask),
                         self._literals(node.right.patterns, mask)), frozenset(), False)
        return _NOTHING  # feed:, lang:

    def _allocate(self, layer: _Layer, cnfs: list[_Cnf]) -> None:
        width = max((len(c.clauses) for c in cnfs), default=0)
        layer.slots = list(range(self._n_slots, self._n_slots + width))
        layer.neg = self._n_slots + width
        self._n_slots += width + 1
        self._init += [0] * (width + 1)

    def _automaton(self, *, exact_too: bool, odd_only: bool = False) -> _Automaton | None:
        """With ``exact_too``: every literal under its case-folded text (case-sensitive ones
        carry the exact text to compare); without: only the case-sensitive ones, as written."""
        by_text: dict[str, list[_Value]] = {}
        for sid, search in enumerate(self.searches):
            p = search.pattern
            if p.regex or (not exact_too and search.casefold):
                continue
            if odd_only and len(p.text.casefold()) == len(p.text):
                continue
            key = p.text.casefold() if exact_too else p.text
            exact = None if search.casefold or not exact_too else p.text
            if exact_too and len(key) != len(p.text):
                continue  # folding changes its length: only the exact pass can find it
            by_text.setdefault(key, []).append(
                (sid, p.left_bounded, p.right_bounded, p.prefix, exact)
            )
        if not by_text:
            return None
        keys = list(by_text)
        # A DFA is the fastest automaton to run; past a few tens of thousands of terms its
        # memory grows, and the contiguous NFA is nearly as fast.
        kind = (ahocorasick_rs.Implementation.DFA if len(keys) <= 30_000
                else ahocorasick_rs.Implementation.ContiguousNFA)
        return _Automaton(
            ahocorasick_rs.AhoCorasick(keys, matchkind=ahocorasick_rs.MatchKind.Standard,
                                       implementation=kind),
            [tuple(by_text[k]) for k in keys],
        )

    # --- matching ----------------------------------------------------------------------

    def scan(self, entry: Entry, feed_name: str, feed_tags: Iterable[str] = ()) -> Scan:
        """Normalise and search every field any rule looks at."""
        scan = Scan(self, entry, feed_name, frozenset(feed_tags))
        for fi in self.fields:
            raw = field_text(entry, TEXT_FIELDS[fi])
            if not raw:
                continue
            if self._needs_cs:
                exact = normalize(raw, casefold=False)
                folded_text = exact.text.casefold()
                shared = len(folded_text) == len(exact.text)
                if shared:  # one to one: the two texts share the offset map
                    folded = Normalized(raw, folded_text, exact.piece_starts,
                                        exact.piece_origins, exact.piece_spans)
                    self._search(self._odd, exact.text, None, fi, scan)
                else:
                    folded = normalize(raw)
                    self._search(self._exact, exact.text, None, fi, scan)
                scan.norms[(fi, False)] = exact
                self._search(self._all, folded.text, exact.text if shared else None, fi, scan)
            else:
                folded = exact = normalize(raw)
                self._search(self._all, folded.text, None, fi, scan)
            scan.norms[(fi, True)] = folded
            for sid, search in self._regexes:
                text = (folded if search.casefold else exact).text
                found = [m.span() for m in compiled_regex(
                    search.pattern.text, search.pattern.case_sensitive).finditer(text)
                    if m.end() > m.start()]
                if found:
                    scan.spans[sid << _SHIFT | fi] = found
                    scan.fields_of[sid] = scan.fields_of.get(sid, 0) | 1 << fi
        return scan

    def _search(
        self, automaton: _Automaton | None, text: str, exact_text: str | None, fi: int,
        scan: Scan,
    ) -> None:
        """Every occurrence of every pattern, with the boundary rules of
        :func:`bot.rules.terms.find_all` (non-overlapping per pattern, left to right).

        ``exact_text`` (same length as ``text``) is where case-sensitive patterns are
        compared; without it they are skipped (the caller runs the exact pass)."""
        if automaton is None:
            return
        word = self._word
        spans = scan.spans
        fields_of = scan.fields_of
        bit = 1 << fi
        size = len(text)
        last_end: dict[int, int] = {}
        values_of = automaton.values
        for index, start, stop in automaton.ac.find_matches_as_indexes(text, overlapping=True):
            for sid, left, right, prefix, exact in values_of[index]:
                if exact is not None and (exact_text is None
                                          or exact_text[start:stop] != exact):
                    continue
                if start < last_end.get(sid, 0):
                    continue
                if left and start > 0 and (
                        (c := text[start - 1]) in word or c > "\uffff" and is_word_char(c)):
                    continue
                hit_end = stop
                if prefix:
                    while hit_end < size and (
                            (c := text[hit_end]) in word or c > "\uffff" and is_word_char(c)):
                        hit_end += 1
                elif right and stop < size and (
                        (c := text[stop]) in word or c > "\uffff" and is_word_char(c)):
                    continue
                last_end[sid] = hit_end
                key = sid << _SHIFT | fi
                found = spans.get(key)
                if found is None:
                    spans[key] = [(start, hit_end)]
                    fields_of[sid] = fields_of.get(sid, 0) | bit
                else:
                    found.append((start, hit_end))

    def _scope(self, feed_name: str, feed_tags: frozenset[str]) -> int:
        """Bits of the enabled rules whose ``scope.feeds`` admits this feed."""
        key = (feed_name, feed_tags)
        mask = self._scope_cache.get(key)
        if mask is None:
            mask = self._unscoped
            for bit, feeds in self._scoped:
                if feed_name in feeds or not feeds.isdisjoint(feed_tags):
                    mask |= bit
            mask &= self._enabled
            if len(self._scope_cache) > 4096:  # feeds come and go; keep the cache bounded
                self._scope_cache.clear()
            self._scope_cache[key] = mask
        return mask

    def match(self, entry: Entry, *, feed_name: str, feed_tags: Iterable[str] = ()) -> list[Match]:
        """Matches of every enabled rule whose scope admits this feed, in rule order."""
        scan = self.scan(entry, feed_name, feed_tags)
        acc = self._init.copy()
        contributions = self._contributions
        for sid, fields in scan.fields_of.items():
            for mask, slot, bits in contributions[sid]:
                if fields & mask:
                    acc[slot] |= bits
        query = self._query
        candidates = self._scope(feed_name, scan.feed_tags) & ~acc[query.neg]
        for slot in query.slots:
            candidates &= acc[slot]
        if not candidates:
            return []
        sure = candidates & query.exact
        excluded = maybe_excluded = 0
        for layer in self._layers:
            fired = layer.members & ~acc[layer.neg]
            for slot in layer.slots:
                fired &= acc[slot]
            excluded |= fired & layer.exact
            maybe_excluded |= fired & ~layer.exact
        candidates &= ~excluded
        out: list[Match] = []
        programs = self.programs
        while candidates:
            low = candidates & -candidates
            candidates ^= low
            program = programs[low.bit_length() - 1]
            if not low & sure:
                test = program.test
                assert test is not None  # every rule not decided by its clauses has a test
                if not test(scan):
                    continue
            if low & maybe_excluded and any(test(scan) for test in program.excludes):
                continue
            groups = program.groups
            if len(groups) == 1:
                found = scan.group(groups[0])
            else:
                found = []
                for gid in groups:
                    found += scan.group(gid)
            if program.extra is not None:
                found = found + program.extra(scan)
            keys = ordered_hit_keys(found, program.tracked)
            rule = program.rule
            out.append(Match(rule.id, rule.version, scan.hit_objects(keys)))
        return out

    def near(self, spec: _Near, scan: Scan, into: list[HitKey] | None) -> bool:
        """Whether a NEAR holds (and, with ``into``, the hits of every pair that makes it
        hold, as :func:`bot.rules.match.evaluate` collects them)."""
        matched = False
        spans = scan.spans
        for fi in spec.fields:
            if not (any(sid << _SHIFT | fi in spans for sid, _, _ in spec.left)
                    and any(sid << _SHIFT | fi in spans for sid, _, _ in spec.right)):
                continue
            lefts = self._occurrences(spec.left, fi, scan)
            rights = self._occurrences(spec.right, fi, scan)
            for a_start, a_first, a_last, a_key in lefts:
                for b_start, b_first, b_last, b_key in rights:
                    if spec.ordered:
                        if b_start <= a_start:
                            continue
                        between = b_first - a_last - 1
                    elif a_start <= b_start:
                        between = b_first - a_last - 1
                    else:
                        between = a_first - b_last - 1
                    if between <= spec.distance:
                        if into is None:
                            return True
                        matched = True
                        into.append(a_key)
                        into.append(b_key)
        return matched

    @staticmethod
    def _occurrences(
        side: tuple[tuple[int, str, bool], ...], fi: int, scan: Scan
    ) -> list[tuple[int, int, int, HitKey]]:
        """(start, first word, last word, hit key) of each occurrence of a NEAR side."""
        out: list[tuple[int, int, int, HitKey]] = []
        spans = scan.spans
        for sid, label, casefold in side:
            key = sid << _SHIFT | fi
            found = spans.get(key)
            if not found:
                continue
            index = scan.words(fi, casefold)
            original = scan.original(key)
            for (start, end), (o_start, o_end) in zip(found, original, strict=True):
                first, last = index.span(start, end)
                out.append((start, first, last, (fi, o_start, o_end, label)))
        return out


def _mask(fields: Iterable[str]) -> int:
    mask = 0
    for name in fields:
        mask |= 1 << _FIELD_INDEX[name]
    return mask


def _patterns(node: Compiled) -> list[Pattern]:
    if isinstance(node, Leaf):
        return list(node.patterns)
    if isinstance(node, AllOf | AnyOf):
        return [p for c in node.children for p in _patterns(c)]
    if isinstance(node, Negate | InField):
        return _patterns(node.child)
    if isinstance(node, Proximity):
        return [*node.left.patterns, *node.right.patterns]
    return []


def _rule_patterns(rule: Rule) -> list[Pattern]:
    patterns = _patterns(rule.compiled)
    for _, node in rule.compiled_excludes:
        patterns += _patterns(node)
    if rule.track_list is not None:
        patterns += rule.track_list.patterns
    return patterns


def _lang_is(scan: Scan, code: str) -> bool:
    lang = (scan.entry.language or "").casefold().replace("_", "-")
    return lang == code or lang.startswith(code + "-")


@dataclass
class _Codegen:
    """Writes every rule's test, exclusions and hit collector as Python functions over a
    :class:`Scan`, compiled together in one module. No text from a rule file reaches the
    generated source: numbers are written out, everything else goes through ``C``."""

    engine: Engine
    constants: list[Any] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    _cells: list[tuple[bool, int, bool]] = field(default_factory=list)
    _uses_masks: set[int] = field(default_factory=set)

    def const(self, value: Any) -> str:
        self.constants.append(value)
        return f"C[{len(self.constants) - 1}]"

    def _present(self, mask: int) -> str:
        self._uses_masks.add(mask)
        return f"p{mask}"

    def truth(self, node: Compiled, mask: int) -> str:
        if isinstance(node, Leaf):
            return self._leaf_truth(node.patterns, mask)
        if isinstance(node, AllOf):
            return "(" + " and ".join(self.truth(c, mask) for c in node.children) + ")"
        if isinstance(node, AnyOf):
            leaves = [p for c in node.children if isinstance(c, Leaf) for p in c.patterns]
            parts = [self._leaf_truth(leaves, mask)] if leaves else []
            parts += [self.truth(c, mask) for c in node.children if not isinstance(c, Leaf)]
            return "(" + " or ".join(parts) + ")"
        if isinstance(node, Negate):
            return f"(not {self.truth(node.child, mask)})"
        if isinstance(node, InField):
            return self.truth(node.child, 1 << _FIELD_INDEX[node.field])
        if isinstance(node, FeedIs):
            name = self.const(node.name)
            return f"(d.feed_name == {name} or {name} in d.feed_tags)"
        if isinstance(node, LangIs):
            return f"lang(d, {self.const(node.code)})"
        spec = self._near(node, mask)
        return (f"({self._leaf_truth(node.left.patterns, mask)} and "
                f"{self._leaf_truth(node.right.patterns, mask)} and near({spec}, d, None))")

    def _leaf_truth(self, patterns: Iterable[Pattern], mask: int) -> str:
        self.engine.fields_used |= mask
        sids = sorted({self.engine.sid(p) for p in patterns})
        if len(sids) == 1:
            return f"(F({sids[0]}, 0) & {mask})"
        return f"(not {self._present(mask)}.isdisjoint({self.const(frozenset(sids))}))"

    def _near(self, node: Proximity, mask: int) -> str:
        engine = self.engine
        engine.fields_used |= mask
        return self.const(_Near(
            tuple((engine.sid(p), p.label, not p.case_sensitive) for p in node.left.patterns),
            tuple((engine.sid(p), p.label, not p.case_sensitive) for p in node.right.patterns),
            node.distance, node.ordered, _FIELDS_IN[mask],
        ))

    def hits(self, node: Compiled, mask: int, indent: str,
             free: dict[int, list[Pattern]] | None) -> list[str]:
        """Statements adding to ``out`` the hit keys that made a *true* ``node`` true: the
        occurrences :func:`bot.rules.match.evaluate` returns for it. Terms that need no
        condition go to ``free`` (by field mask) instead, when it is given."""
        if isinstance(node, Leaf):
            if free is not None:
                free.setdefault(mask, []).extend(node.patterns)
                return []
            return [f"{indent}out += G({self.engine.group(node.patterns, mask)})"]
        if isinstance(node, InField):
            return self.hits(node.child, 1 << _FIELD_INDEX[node.field], indent, free)
        if isinstance(node, Proximity):
            return [f"{indent}near({self._near(node, mask)}, d, out)"]
        if isinstance(node, AllOf | AnyOf):
            lines: list[str] = []
            for child in node.children:
                if isinstance(node, AnyOf) and _needs_guard(child):
                    inner = self.hits(child, mask, indent + "    ", None)
                    if inner:
                        lines.append(f"{indent}if {self.truth(child, mask)}:")
                        lines += inner
                else:
                    lines += self.hits(child, mask, indent, free)
            return lines
        return []  # NOT, feed:, lang: name no text

    def program(self, rule: Rule, *, test: bool) -> _Program:
        """Write the functions for ``rule``; they are bound by :meth:`finish`."""
        mask = _mask(rule.fields)
        n = len(self._cells)
        self._uses_masks = set()
        body = self.truth(rule.compiled, mask) if test else None
        test_masks = self._uses_masks
        excludes: list[str] = []
        exclude_masks: list[set[int]] = []
        for _, node in rule.compiled_excludes:
            self._uses_masks = set()
            excludes.append(self.truth(node, mask))
            exclude_masks.append(self._uses_masks)
        self._uses_masks = set()
        # A false term has no occurrences, so every term outside an AND-inside-an-OR can be
        # collected without a condition: merged into one group per field mask.
        free: dict[int, list[Pattern]] = {}
        lines = self.hits(rule.compiled, mask, "    ", free)
        if rule.track_list is not None:
            free.setdefault(mask, []).extend(rule.track_list.patterns)
        groups = tuple(self.engine.group(patterns, m) for m, patterns in sorted(free.items()))
        hit_masks = self._uses_masks

        def prologue(masks: set[int]) -> str:
            return "".join(f"    p{m} = d.present({m})\n" for m in sorted(masks))

        prelude = "    F = d.fields_of.get\n"
        if body is not None:
            self.source.append(f"def t{n}(d):\n{prelude}{prologue(test_masks)}"
                               f"    return bool{body}\n")
        for k, (expr, masks) in enumerate(zip(excludes, exclude_masks, strict=True)):
            self.source.append(f"def x{n}_{k}(d):\n{prelude}{prologue(masks)}"
                               f"    return bool{expr}\n")
        if lines:
            self.source.append(f"def h{n}(d):\n{prelude}    G = d.group\n{prologue(hit_masks)}"
                               "    out = []\n" + "".join(line + "\n" for line in lines)
                               + "    return out\n")
        tracked = rule.track_list.names if rule.track_list is not None else frozenset()
        program = _Program(rule, None, (), groups, None, tracked)
        self._cells.append((body is not None, len(excludes), bool(lines)))
        return program

    def finish(self) -> None:
        """Compile the module and put each rule's functions into its program."""
        namespace: dict[str, Any] = {"C": self.constants, "near": self.engine.near,
                                     "lang": _lang_is}
        code = compile("".join(self.source), "<policybot rules>", "exec")
        exec(code, namespace)  # noqa: S102 - generated from the rules' trees, see the docstring
        programs = self.engine.programs
        for n, (has_test, n_excludes, has_extra) in enumerate(self._cells):
            program = programs[n]
            programs[n] = _Program(
                program.rule,
                namespace[f"t{n}"] if has_test else None,
                tuple(namespace[f"x{n}_{k}"] for k in range(n_excludes)),
                program.groups,
                namespace[f"h{n}"] if has_extra else None,
                program.tracked,
            )


def _needs_guard(node: Compiled) -> bool:
    """Whether ``node``'s hit statements must wait for it to be true (inside an OR): an AND
    of terms contributes its terms only when all of them occur."""
    if isinstance(node, InField):
        return _needs_guard(node.child)
    return isinstance(node, AllOf)
