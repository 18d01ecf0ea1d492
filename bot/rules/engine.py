"""Every rule compiled together: one multi-pattern pass per field, then every rule's query
decided at once with bit operations, and Python work only for the rules that matched.

DESIGN.md ("Rules"): matching cost grows with the text, not with the number of rules.

    entry ─ normalise each field once ─ Aho-Corasick over all literal terms (+ RE2 regexes)
          ─ boundary checks ─ occurrences by (search, field)
          ─ for each search found: OR its rule bits into one accumulator
          ─ shift and AND: the rules whose query holds, or may hold
          ─ a compiled test for the few that may (NEAR, feed:, lang:, NOT deep down)
          ─ exclusions, the same way ─ hits only for the rules that matched

Each query is compiled to *necessary clauses* in conjunctive normal form: ``a AND (b OR
title:c)`` needs a term of ``a``, and a term of ``b`` or ``c`` in the title. Clause *j* of
rule *i* is bit ``i × stride + j`` of one integer, so finding a search sets, in one OR, every
clause it belongs to in every rule; shifting the accumulator by *j* and ANDing the shifts
leaves a bit at ``i × stride`` for every rule whose clauses all hold and whose top-level
``NOT`` terms are all absent. Nothing here loops over rules, and the integers are a few
hundred bytes at 1,000 rules. When the clauses say everything about a query (AND, OR,
terms, fields, a top-level NOT of terms) its bit is the answer; otherwise they are
necessary conditions and the rule's test — generated Python over the set of searches found
— decides. Exclusions are compiled the same way, the n-th exclusion of every rule in a layer
of slots of its own. When a query has more clauses than :data:`MAX_CLAUSES`, the rarest are
kept (a term many rules share is a common word) and its test decides.

A matched rule's hits are the occurrences :func:`bot.rules.match.evaluate` collects: of every
term outside an AND-inside-an-OR (a false term has none), of the terms of such an AND when
it holds, of NEAR pairs, and of the track list. Hits are built once per entry and pattern,
as tuples that sort in reading order; rules that found the same patterns share one tuple.
NEAR counts the words between two occurrences only (:func:`bot.rules.text.words_within`),
and to decide compares each left occurrence with its nearest right ones.

The results are exactly those of :func:`bot.rules.match.evaluate` (``RuleSet.match_slowly``);
``tests/test_rules_engine*.py`` check the two against each other on the shipped rules, on
generated queries and on bench/match.py's corpora.

Compiled parts (``bot/rules/_speedups.c``, an optional C extension; bot.rules.native says
whether it is in use, ``POLICYBOT_NATIVE=0`` turns it off). The Python written here is the
reference each part is tested against (tests/test_rules_native.py), and what runs without a
C compiler:

- the term search (``Scanner``, for :meth:`Engine._search`): instead of an automaton over
  every position, a term that starts with a word character is looked up once per run of
  word characters (it can only start there), any other at each position under its first two
  characters; the boundary checks and "occurrences of one search do not overlap" as here;
- normalising and case folding a field (``Normalizer``, for
  :func:`bot.rules.text.normalize` with ``casefold=False``) when every character maps to
  one; anything else is :func:`bot.rules.text.python_normalize`;
- deciding and matching (``Matcher``, for :meth:`Engine._decide` and
  :meth:`Engine._matches`): the accumulator as bytes, set from each found search's clause
  positions; the tests, exclusions, conditions and hit statements the codegen writes as
  Python are also written as code for the matcher (:class:`_Codegen`, ``_OP_ANY``…) and
  evaluated there, NEAR pairs' hits included; what it cannot take (a NEAR with a regular
  expression, texts that do not line up, astral characters) goes to
  :meth:`Engine._match_one` or :meth:`Engine._near_python`;
- NEAR's decision (``Near``, for :meth:`Engine._near_python` without hits) except with a
  regular expression, texts that do not line up, or characters beyond the BMP.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from itertools import chain, product
from typing import Any, TypeVar, cast

import ahocorasick_rs

from bot.model import Entry, Hit, Match, field_text
from bot.rules import native as native_parts  # `native` is also Engine's argument
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
)
from bot.rules.query import TEXT_FIELDS
from bot.rules.ruleset import HitKey, Rule, ordered_hit_keys
from bot.rules.terms import Pattern, compiled_regex
from bot.rules.text import (
    UNSPACED_RANGES,
    Normalized,
    WordIndex,
    casefolder,
    exact_normalizer,
    is_word_char,
    normalize,
    units_between,
    word_chars,
    words_within,
)

_FIELD_INDEX = {name: i for i, name in enumerate(TEXT_FIELDS)}
_SHIFT = 3  # a found term's key is ``sid << _SHIFT | field index``
assert len(TEXT_FIELDS) <= 1 << _SHIFT
# The field indexes in a field mask, for every mask.
_FIELDS_IN = tuple(
    tuple(fi for fi in range(len(TEXT_FIELDS)) if mask >> fi & 1)
    for mask in range(1 << len(TEXT_FIELDS))
)

_ALL_FIELDS = (1 << len(TEXT_FIELDS)) - 1

_T = TypeVar("_T")


def _fast_constructor(cls: type[_T]) -> Callable[..., _T]:
    """``cls(*values)`` for a frozen, slotted dataclass without ``__post_init__``, setting
    its slots directly: the generated ``__init__`` calls ``object.__setattr__`` once per
    field (frozen), which costs three times as much, and an entry makes a few dozen Hit and
    Match values. The result is an ordinary instance (equal, hashable, picklable); a class
    of another shape gets its own constructor back."""
    attributes = vars(cls)
    names = tuple(f.name for f in dataclasses.fields(cast(Any, cls)))
    if (not attributes["__dataclass_params__"].frozen or "__post_init__" in attributes
            or names != attributes.get("__slots__")):
        return cls
    setters = tuple(vars(cls)[name].__set__ for name in names)
    new = object.__new__
    if len(names) == 3:
        set_a, set_b, set_c = setters

        def make3(a: Any, b: Any, c: Any) -> _T:
            obj = new(cls)
            set_a(obj, a)
            set_b(obj, b)
            set_c(obj, c)
            return obj
        return make3
    if len(names) == 4:
        set_a, set_b, set_c, set_d = setters

        def make4(a: Any, b: Any, c: Any, d: Any) -> _T:
            obj = new(cls)
            set_a(obj, a)
            set_b(obj, b)
            set_c(obj, c)
            set_d(obj, d)
            return obj
        return make4
    return cls


_new_hit = _fast_constructor(Hit)  # Hit(field, start, end, term)
_new_match = _fast_constructor(Match)  # Match(rule_id, rule_version, hits)

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
    ac: ahocorasick_rs.AhoCorasick | None  # None when the compiled search is in use
    values: list[tuple[_Value, ...]]  # by pattern index
    # The same keys filed for the compiled search (bot/rules/_speedups.c), when it is in use.
    native: Any = None


@dataclass(frozen=True, slots=True)
class _Near:
    """A compiled NEAR/ONEAR: each side's patterns as (sid, label), in query order."""

    left: dict[int, tuple[str, ...]]  # sid → the labels of its patterns on that side
    right: dict[int, tuple[str, ...]]
    left_sids: frozenset[int]
    right_sids: frozenset[int]
    distance: int
    ordered: bool
    mask: int  # the fields it looks in
    # The text its words are counted in when every pattern is searched in it (folded or
    # exact) and none is a regular expression; else None (see Engine._near_text).
    casefold: bool | None
    regex: bool  # a side has a regular expression


# A NEAR side's occurrence: (start, end, original start, original end, label, sid).
_NearOcc = tuple[int, int, int, int, str, int]


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
    """A query, or the n-th exclusion of every rule that has one: which accumulator slots
    hold its clauses and its negated terms, and which rules belong to it (``members``) and
    are decided by their clauses alone (``exact``), as bits at ``rule index × stride``."""

    slots: list[int]
    neg: int
    members: int = 0
    exact: int = 0


Groups = tuple[tuple[int, frozenset[int]], ...]  # (field mask, pids) pairs


@dataclass(frozen=True, slots=True)
class _Program:
    """One rule, compiled for the engine."""

    rule_id: str
    version: str
    test: Test | None  # None when the clauses decide the query exactly
    excludes: tuple[Test, ...]
    # Patterns (as pids) whose every occurrence in the fields of a mask is a hit of a match:
    # the terms of the query outside an AND-inside-an-OR, and the track list.
    free: Groups
    # The terms of an AND inside an OR, hits only when that AND holds: (its test, groups).
    guarded: tuple[tuple[Test, Groups], ...]
    extra: Hits | None  # the other hits: NEAR pairs, terms under conditions within conditions
    tracked: frozenset[str]  # the track list's canonical names
    # The common case, one free group and nothing else: its mask and pids.
    simple: bool
    mask: int
    pids: frozenset[int]


@dataclass(frozen=True, slots=True)
class _Written:
    """What :class:`_Codegen` wrote for one rule, bound to its functions once compiled."""

    rule: Rule
    test: bool
    excludes: int
    extra: bool
    free: Groups
    guarded: tuple[Groups, ...]
    # Where the same tests and hit statements start in _Codegen.code (-1: none), for the
    # compiled matcher: (test, exclusions, guard conditions, hit statements).
    code: tuple[int, tuple[int, ...], tuple[int, ...], int] = (-1, (), (), -1)


# The compiled matcher's code (bot/rules/_speedups.c, ``eval_node`` and ``run_hits``): each
# node is [op, size, …] with size its length in ints, header included.
_OP_ANY = 1  # [op, size, field mask, sid…]: one of the searches occurs in one of the fields
_OP_AND = 2  # [op, size, node…]
_OP_OR = 3  # [op, size, node…]
_OP_NOT = 4  # [op, size, node]
_OP_NEAR = 5  # [op, size, constant]: Engine.near(constant, scan, None)
_OP_CALL = 6  # [op, size, constant]: constant(scan), for feed: and lang:
_ST_GROUP = 7  # [op, size, field mask, pid…]: the group's hits
_ST_NEAR = 8  # [op, size, constant, left pid count, pid…, pid…]: a NEAR's pairs
_ST_IF = 9  # [op, size, node, statement…]: the statements when the node holds
_ST_ALL = 10  # [op, size, statement…]: a rule's hit statements

# A hit statement of _Codegen.hits: ("group", mask, patterns), ("near", node, mask) or
# ("if", node, mask, statements).
_Statement = tuple[Any, ...]


class Scan:
    """One entry from one feed, searched once for every pattern of every rule."""

    __slots__ = ("engine", "entry", "feed_name", "feed_tags", "norms", "_spans", "_found",
                 "_fields_of",
                 "hits", "_present", "_pids", "_pid_hits", "_groups", "_original", "_words",
                 "_hit_objects")

    def __init__(self, engine: Engine, entry: Entry, feed_name: str,
                 feed_tags: frozenset[str]) -> None:
        self.engine = engine
        self.entry = entry
        self.feed_name = feed_name
        self.feed_tags = feed_tags
        self.norms: dict[tuple[int, bool], Normalized] = {}
        # sid << 3 | field → spans: kept in C by the compiled search (Occurrences), and a dict
        # for Python only once asked for (see spans); a dict from the start without it.
        self._found = engine._new_occurrences()
        self._spans: dict[int, list[tuple[int, int]]] | None = (
            {} if self._found is None else None)
        # sid → mask of the fields it occurs in: read from _found when it is kept in C (see
        # fields_of), kept here by the Python search without it.
        self._fields_of: dict[int, int] | None = {} if self._found is None else None
        # ((field mask, pids found), …), track names → hits: shared by rules that match alike
        self.hits: dict[tuple[tuple[tuple[int, frozenset[int]], ...], frozenset[str]],
                        tuple[Hit, ...]] = {}
        self._present: dict[int, set[int]] = {}
        self._pids: set[int] | None = None
        # pid → its hit keys in every field, and their hits unless two overlap
        self._pid_hits: dict[int, tuple[list[HitKey], tuple[Hit, ...] | None]] = {}
        self._groups: dict[int, list[HitKey]] = {}
        self._original: dict[int, list[tuple[int, int]]] = {}
        self._words: dict[tuple[int, bool], WordIndex] = {}
        self._hit_objects: dict[HitKey, Hit] = {}

    @property
    def spans(self) -> dict[int, list[tuple[int, int]]]:
        """``sid << 3 | field`` → the spans of that search in that field's normalised text."""
        spans = self._spans
        if spans is None:
            assert self._found is not None
            spans = self._spans = self._found.as_dict()
        return spans

    @property
    def fields_of(self) -> dict[int, int]:
        """The searches found, each with the mask of the fields it occurs in."""
        fields_of = self._fields_of
        if fields_of is None:
            assert self._found is not None
            fields_of = self._fields_of = self._found.fields_of()
        return fields_of

    @property
    def span_view(self) -> Any:
        """What :attr:`spans` says, for lookups by key (``.get(key, default)``) without
        building the whole dict when the spans are kept in C."""
        return self._found if self._found is not None else self._spans

    def present(self, mask: int) -> set[int]:
        """The searches found in any field of ``mask``."""
        found = self._present.get(mask)
        if found is None:
            if not self.engine.fields_used & ~mask:  # every field searched: every search found
                found = self._present[mask] = set(self.fields_of)
            else:
                found = self._present[mask] = {
                    sid for sid, fields in self.fields_of.items() if fields & mask}
        return found

    def pids(self) -> set[int]:
        """The patterns (search and label) found in any field."""
        found = self._pids
        if found is None:
            found = self._pids = set(chain.from_iterable(
                map(self.engine.pids_of.__getitem__, self.fields_of)))
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
            found = self.span_view.get(key)
            assert found is not None, key
            if len(norm.piece_starts) == 1 and norm.piece_spans[0] is None:
                # One piece copied from the original (most text): a constant shift.
                shift = norm.piece_origins[0]
                spans = found if not shift else [(s + shift, e + shift) for s, e in found]
            else:
                spans = [norm.original_span(s, e) for s, e in found]
            self._original[key] = spans
        return spans

    def pid_hits(self, pid: int) -> tuple[list[HitKey], tuple[Hit, ...] | None]:
        """The hit keys of found pattern ``pid`` in every field it occurs in, in reading
        order, and their hits — which are the hits of a match whose only term it is — or
        None when two overlap in the original text (a ligature) and need sorting out."""
        found = self._pid_hits.get(pid)
        if found is None:  # once per entry and pattern
            engine = self.engine
            sid = engine.pid_sid[pid]
            label = engine.pid_label[pid]
            fields = self.fields_of[sid]
            name = TEXT_FIELDS
            objects = self._hit_objects
            keys: list[HitKey] = []
            hits: list[Hit] = []
            for fi in _FIELDS_IN[fields]:
                for s, e in self.original(sid << _SHIFT | fi):
                    key = (fi, s, e, label)
                    hit = objects.get(key)
                    if hit is None:
                        hit = objects[key] = _new_hit(name[fi], s, e, label)
                    keys.append(key)
                    hits.append(hit)
            clean = len(keys) == 1 or all(
                b[0] != a[0] or b[1] >= a[2] for a, b in zip(keys, keys[1:], strict=False))
            found = self._pid_hits[pid] = (keys, tuple(hits) if clean else None)
        return found

    def keys(self, parts: Iterable[tuple[int, Iterable[int]]]) -> list[HitKey]:
        """Hit keys of every occurrence of found patterns in fields: (field mask, pids)."""
        out: list[HitKey] = []
        fields_of = self.fields_of
        pid_sid = self.engine.pid_sid
        cache = self._pid_hits
        for mask, pids in parts:
            for pid in pids:
                keys = (cache.get(pid) or self.pid_hits(pid))[0]
                if fields_of[pid_sid[pid]] & ~mask:
                    keys = [k for k in keys if mask >> k[0] & 1]
                out += keys
        return out

    def group(self, gid: int) -> list[HitKey]:
        """Hit keys of a group of patterns (a leaf of a query), for generated code."""
        found = self._groups.get(gid)
        if found is None:
            pids, mask = self.engine.groups[gid]
            found = self._groups[gid] = self.keys(((mask, pids & self.pids()),))
        return found

    def finish(self, keys: list[HitKey], tracked: frozenset[str]) -> tuple[Hit, ...]:
        """The hits of a match: unique, in reading order, none inside a longer one."""
        objects = self._hit_objects
        ordered = ordered_hit_keys(keys, tracked)
        try:
            return tuple(map(objects.__getitem__, ordered))
        except KeyError:
            pass
        out = []
        for key in ordered:
            hit = objects.get(key)
            if hit is None:  # a NEAR pair's occurrence (the others come from pid_hits)
                hit = objects[key] = _new_hit(TEXT_FIELDS[key[0]], key[1], key[2], key[3])
            out.append(hit)
        return tuple(out)


class Engine:
    """All rules' patterns in two automata (case-folded and exact) plus the regexes, every
    rule's query and exclusions as clause bits, and the functions they need."""

    def __init__(self, rules: Sequence[Rule], *, native: bool = True) -> None:
        """``native``: use the compiled search when it was built (see bot.rules.native)."""
        # The compiled parts, decided once for everything this engine builds.
        self._compiled = native_parts.compiled() if native else None
        self._normalize_exact = exact_normalizer(self._compiled)
        self._casefolded = casefolder(self._compiled)
        compiled = self._compiled
        self._near_compiled = (compiled.Near(_word_bitmap(), _unspaced_bitmap())
                               if compiled is not None else None)
        self.searches: list[_Search] = []
        self._sid_by_key: dict[tuple[str, bool, bool, bool], int] = {}
        self._sid_by_pattern: dict[int, int] = {}
        self._kept: list[Pattern] = []
        # A pid is a search with the label its hits carry (a list entry's canonical name).
        self.pid_sid: list[int] = []
        self.pid_label: list[str] = []
        self._pid_by_key: dict[tuple[int, str], int] = {}
        # Groups of pids in a field mask, for generated code.
        self.groups: list[tuple[frozenset[int], int]] = []
        self._gid_by_key: dict[tuple[frozenset[int], int], int] = {}
        self.fields_used = 0
        # How many rules use each search: a term many rules share is a common word, so a
        # clause of rare terms is the one to keep when a query has too many.
        self._uses: list[int] = []
        for rule in rules:
            for sid in {self.sid(p) for p in rule_patterns(rule)}:
                self._uses += [0] * (sid + 1 - len(self._uses))
                self._uses[sid] += 1
        codegen = _Codegen(self, code=[] if self._compiled is not None else None)
        self._query = _Layer([], 0)
        self._layers: list[_Layer] = []  # exclusion layers: the n-th exclusion of each rule
        layered: list[tuple[_Layer, int, _Cnf]] = []
        for index, rule in enumerate(rules):
            fm = _mask(rule.fields)
            cnf = self._cnf(rule.compiled, fm)
            layered.append((self._query, index, cnf))
            for n, (_, node) in enumerate(rule.compiled_excludes):
                while len(self._layers) <= n:
                    self._layers.append(_Layer([], 0))
                layered.append((self._layers[n], index, self._cnf(node, fm)))
            codegen.program(rule, test=not cnf.exact)
        # Every slot of every layer, interleaved: slot s of rule i is bit i × stride + s, so
        # that a search's contribution to every clause it is in is one integer.
        stride = 0
        for layer in (self._query, *self._layers):
            width = max((len(c.clauses) for lay, _, c in layered if lay is layer), default=0)
            layer.slots = list(range(stride, stride + width))
            layer.neg = stride + width
            stride += width + 1
        self._stride = stride
        init: list[int] = []  # bit positions true before any term is found
        positions: dict[tuple[int, int], list[int]] = {}  # (sid, field mask) → bit positions
        for layer, index, cnf in layered:
            base = index * stride
            layer.members |= 1 << base
            if cnf.exact:
                layer.exact |= 1 << base
            for j, slot in enumerate(layer.slots):
                if j >= len(cnf.clauses):
                    init.append(base + slot)  # no j-th clause: vacuously true
                    continue
                for literal in cnf.clauses[j]:
                    positions.setdefault(literal, []).append(base + slot)
            for literal in cnf.negs:
                positions.setdefault(literal, []).append(base + layer.neg)
        self._init = _bits(init)
        # By sid: (field mask, shift, bits >> shift), so that a search used by a few rules
        # costs a few bytes however many rules there are.
        by_sid: list[list[tuple[int, int, int]]] = [[] for _ in self.searches]
        # The same as positions, for the compiled matcher (released once it is built).
        self._positions_by_sid: list[list[tuple[int, list[int]]]] = [[] for _ in self.searches]
        for (sid, mask), bits in positions.items():
            low = min(bits)
            by_sid[sid].append((mask, low, _bits(b - low for b in bits)))
            self._positions_by_sid[sid].append((mask, sorted(bits)))
        self._contributions = [tuple(c) for c in by_sid]
        # sid << 8 | fields it was found in → accumulator bits: merged on first use, and
        # kept while they take less than about 64 MB.
        self._combined: dict[int, int] = {}
        self._combined_limit = max(4096, (64 << 23) // max(1, len(rules) * stride))
        self.programs = codegen.finish()
        pids_of: list[list[int]] = [[] for _ in self.searches]
        for pid, sid in enumerate(self.pid_sid):
            pids_of[sid].append(pid)
        self.pids_of = [tuple(p) for p in pids_of]
        self._enabled = _bits(i * stride for i, r in enumerate(rules) if r.enabled)
        self._scoped = [(1 << i * stride, frozenset(r.feeds))
                        for i, r in enumerate(rules) if r.feeds]
        self._unscoped = _bits(i * stride for i, r in enumerate(rules) if not r.feeds)
        self._scope_cache: dict[tuple[str, frozenset[str]], int] = {}
        self._admitted_cache: dict[tuple[str, frozenset[str]], bytes] = {}
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
        self._matcher = self._compiled_matcher(codegen)
        self._new_occurrences: Callable[[], Any] = (
            self._compiled.Occurrences if self._compiled is not None else lambda: None)
        self._positions_by_sid = []  # only the compiled matcher needed them
        self._sid_by_pattern.clear()  # compiling is over
        self._kept.clear()

    # --- compiling ---------------------------------------------------------------------

    def _compiled_matcher(self, codegen: _Codegen) -> Any:
        """:meth:`_decide` and :meth:`_matches`, compiled (bot/rules/_speedups.c), or None."""
        compiled = self._compiled
        if (compiled is None or codegen.code is None
                or _new_match is Match or _new_hit is Hit):  # not of that shape
            return None
        rules = len(self.programs)
        stride = self._stride

        def groups(parts: Groups) -> list[tuple[int, list[int]]]:
            return [(mask, sorted(pids)) for mask, pids in parts]

        def per_rule(bits: int) -> bytes:
            return bytes(bits >> (i * stride) & 1 for i in range(rules))

        def layer(lay: _Layer, members: int) -> tuple[list[int], int, bytes, bytes]:
            return lay.slots, lay.neg, per_rule(members), per_rule(lay.exact)

        starts = [w.code for w in codegen.written]
        return compiled.Matcher(
            stride,
            [(groups(p.free), [(at, groups(parts)) for at, (_, parts) in zip(
                guards, p.guarded, strict=True)], p.rule_id, p.version, test, excludes,
              p.tracked, hits)
             for p, (test, excludes, guards, hits) in zip(self.programs, starts, strict=True)],
            self.pids_of, self.pid_sid, self.pid_label, [s.casefold for s in self.searches],
            TEXT_FIELDS, Match, Hit,
            self._init.to_bytes((rules * stride + 7) >> 3, "little"),
            self._positions_by_sid,
            layer(self._query, _bits(i * stride for i in range(rules))),
            [layer(lay, lay.members) for lay in self._layers],
            codegen.code, codegen.code_constants, self._near_compiled, self._near_python)

    def sid(self, pattern: Pattern) -> int:
        sid = self._sid_by_pattern.get(id(pattern))  # patterns are shared: a quick way in
        if sid is None:
            key = pattern.key
            sid = self._sid_by_key.get(key)
            if sid is None:
                sid = self._sid_by_key[key] = len(self.searches)
                self.searches.append(_Search(pattern, not pattern.case_sensitive))
            self._sid_by_pattern[id(pattern)] = sid
            self._kept.append(pattern)  # so that its id is not reused while compiling
        return sid

    def pid(self, pattern: Pattern) -> int:
        key = (self.sid(pattern), pattern.label)
        pid = self._pid_by_key.get(key)
        if pid is None:
            pid = self._pid_by_key[key] = len(self.pid_sid)
            self.pid_sid.append(key[0])
            self.pid_label.append(key[1])
        return pid

    def group(self, patterns: Iterable[Pattern], mask: int) -> int:
        """The id of the group of ``patterns`` in the fields of ``mask``."""
        self.fields_used |= mask
        key = (frozenset(self.pid(p) for p in patterns), mask)
        gid = self._gid_by_key.get(key)
        if gid is None:
            gid = self._gid_by_key[key] = len(self.groups)
            self.groups.append(key)
        return gid

    def _literals(self, patterns: Iterable[Pattern], mask: int) -> Clause:
        self.fields_used |= mask
        return frozenset((self.sid(p), mask) for p in patterns)

    def _cost(self, clause: Clause) -> int:
        """How often a clause is likely to hold: the rules sharing its terms (a term many
        rules use is a common word), so the rarest clauses are the ones kept."""
        return sum(self._uses[sid] + 1 for sid, _ in clause)

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
        values = [tuple(by_text[k]) for k in keys]
        compiled = self._compiled
        if compiled is not None:
            scanner = compiled.Scanner(keys, values, [_filing(k, v) for k, v in zip(
                keys, values, strict=True)], _word_bitmap(), is_word_char)
            return _Automaton(None, values, scanner)
        # A DFA is the fastest automaton to run; past a few tens of thousands of terms its
        # memory grows, and the contiguous NFA is nearly as fast.
        kind = (ahocorasick_rs.Implementation.DFA if len(keys) <= 30_000
                else ahocorasick_rs.Implementation.ContiguousNFA)
        return _Automaton(
            ahocorasick_rs.AhoCorasick(keys, matchkind=ahocorasick_rs.MatchKind.Standard,
                                       implementation=kind),
            values,
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
                exact = self._normalize_exact(raw)
                # One to one (nearly always): the two texts share the offset map.
                shared_map = self._casefolded(exact)
                shared = shared_map is not None
                if shared_map is not None:
                    folded = shared_map
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
                    if scan._found is not None:
                        scan._found.set(sid << _SHIFT | fi, found)
                        scan._fields_of = None  # read again from _found when asked
                    else:
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
        if automaton.native is not None:
            automaton.native.search(text, exact_text, fi, scan._found)
            return
        word = self._word
        spans = scan.spans
        fields_of = scan.fields_of
        bit = 1 << fi
        size = len(text)
        values_of = automaton.values
        assert automaton.ac is not None
        for index, start, stop in automaton.ac.find_matches_as_indexes(text, overlapping=True):
            for sid, left, right, prefix, exact in values_of[index]:
                if exact is not None and (exact_text is None
                                          or exact_text[start:stop] != exact):
                    continue
                if left and start and (
                        (c := text[start - 1]) in word or c > "\uffff" and is_word_char(c)):
                    continue
                end = stop
                if prefix:
                    while end < size and (
                            (c := text[end]) in word or c > "\uffff" and is_word_char(c)):
                        end += 1
                elif right and end < size and (
                        (c := text[end]) in word or c > "\uffff" and is_word_char(c)):
                    continue
                key = sid << _SHIFT | fi
                found = spans.get(key)
                if found is None:
                    spans[key] = [(start, end)]
                    fields_of[sid] = fields_of.get(sid, 0) | bit
                elif start >= found[-1][1]:  # occurrences of one search do not overlap
                    found.append((start, end))

    def _combine(self, sid: int, fields: int) -> int:
        """What finding search ``sid`` in ``fields`` sets in the accumulator."""
        combined = 0
        for mask, shift, bits in self._contributions[sid]:
            if fields & mask:
                combined |= bits << shift
        if len(self._combined) < self._combined_limit:
            self._combined[sid << 8 | fields] = combined
        return combined

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
        matcher = self._matcher
        if matcher is not None:  # _decide and _matches, compiled (bot/rules/_speedups.c)
            programs = self.programs
            return matcher.match(  # type: ignore[no-any-return]
                scan, self._admitted(scan.feed_name, scan.feed_tags),
                lambda i: self._match_one(scan, programs[i]))
        found = self._decide(scan)
        return self._matches(scan, found) if found else []

    def _admitted(self, feed_name: str, feed_tags: frozenset[str]) -> bytes:
        """:meth:`_scope` as one byte per rule, for the compiled matcher."""
        key = (feed_name, feed_tags)
        admitted = self._admitted_cache.get(key)
        if admitted is None:
            mask = self._scope(feed_name, feed_tags)
            stride = self._stride
            admitted = bytes(mask >> (i * stride) & 1 for i in range(len(self.programs)))
            if len(self._admitted_cache) > 4096:  # as _scope's cache
                self._admitted_cache.clear()
            self._admitted_cache[key] = admitted
        return admitted

    def _decide(self, scan: Scan) -> int:
        """The rules that match ``scan``, as bits at ``rule index × stride``."""
        acc = self._init
        combined = self._combined
        for sid, fields in scan.fields_of.items():
            contribution = combined.get(sid << 8 | fields)
            if contribution is None:
                contribution = self._combine(sid, fields)
            acc |= contribution
        query = self._query
        found = self._scope(scan.feed_name, scan.feed_tags) & ~(acc >> query.neg)
        for slot in query.slots:
            found &= acc >> slot
        if not found:
            return 0
        stride = self._stride
        programs = self.programs
        unsure = found & ~query.exact  # the clauses are necessary, not sufficient: test
        while unsure:
            low = unsure & -unsure
            unsure ^= low
            test = programs[(low.bit_length() - 1) // stride].test
            assert test is not None  # every rule not decided by its clauses has a test
            if not test(scan):
                found ^= low
        excluded = maybe = 0
        for layer in self._layers:
            fired = layer.members & ~(acc >> layer.neg)
            for slot in layer.slots:
                fired &= acc >> slot
            excluded |= fired & layer.exact
            maybe |= fired & ~layer.exact
        found &= ~excluded
        maybe &= found
        while maybe:
            low = maybe & -maybe
            maybe ^= low
            if any(test(scan) for test in programs[(low.bit_length() - 1) // stride].excludes):
                found ^= low
        return found

    def _matches(self, scan: Scan, found: int) -> list[Match]:
        """A :class:`Match`, with its hits, for each rule of ``found``, in rule order.

        A rule's hits are every occurrence of its patterns found (as pids) outside any
        condition, and of those under an AND inside an OR that holds, and NEAR pairs: rules
        with the same patterns found share one tuple, and a rule with one pattern found
        shares that pattern's. The common case — a rule whose terms need no condition, one
        of them found, in its fields — is here; every other goes through
        :meth:`_match_one`. (The compiled matcher does the same, see :meth:`match`.)"""
        out: list[Match] = []
        append = out.append
        present = scan.pids()
        pid_cache = scan._pid_hits
        fields_of = scan.fields_of
        pid_sid = self.pid_sid
        pid_hits = scan.pid_hits
        new_match = _new_match
        stride = self._stride
        programs = self.programs
        # Lowest bit (first rule) first: bin() and rfind walk the bits in C.
        bits = bin(found)
        top = len(bits) - 1
        at = bits.rfind("1")
        while at > 1:
            program = programs[(top - at) // stride]
            at = bits.rfind("1", 2, at)
            if program.simple:
                got = program.pids & present
                if len(got) == 1:  # the common case: one pattern's hits, if in scope
                    (pid,) = got
                    hits = (pid_cache.get(pid) or pid_hits(pid))[1]
                    if hits is not None and not fields_of[pid_sid[pid]] & ~program.mask:
                        append(new_match(program.rule_id, program.version, hits))
                        continue
            append(self._match_one(scan, program))
        return out

    def _match_one(self, scan: Scan, program: _Program) -> Match:
        """The :class:`Match` of a rule that matched, the long way (see :meth:`_matches`)."""
        present = scan.pids()
        cache = scan.hits
        if program.simple:
            key = (((program.mask, program.pids & present),), program.tracked)
            found_hits = cache.get(key)
            if found_hits is None:
                found_hits = cache[key] = scan.finish(scan.keys(key[0]), program.tracked)
            return _new_match(program.rule_id, program.version, found_hits)
        parts = tuple((mask, pids & present) for mask, pids in program.free)
        for condition, groups in program.guarded:
            if condition(scan):
                parts += tuple((mask, pids & present) for mask, pids in groups)
        extra = program.extra
        if extra is None:
            found_hits = cache.get((parts, program.tracked))
            if found_hits is None:
                found_hits = cache[(parts, program.tracked)] = scan.finish(
                    scan.keys(parts), program.tracked)
        else:
            found_hits = scan.finish(extra(scan) + scan.keys(parts), program.tracked)
        return _new_match(program.rule_id, program.version, found_hits)

    def near(self, spec: _Near, scan: Scan, into: list[HitKey] | None) -> bool:
        """Whether a NEAR holds (see :meth:`_near_python`): to decide, compiled when built
        (bot/rules/_speedups.c), which hands back the cases it does not take."""
        if into is None and self._near_compiled is not None:
            decided: bool | None = self._near_compiled.decide(spec, scan)
            if decided is not None:
                return decided
        return self._near_python(spec, scan, into)

    def _near_python(self, spec: _Near, scan: Scan, into: list[HitKey] | None) -> bool:
        """Whether a NEAR holds (and, with ``into``, the hits of every pair that makes it
        hold, as :func:`bot.rules.match.evaluate` collects them).

        Words are counted only between the two occurrences compared, and only until there
        are too many; to decide, each left occurrence is compared with the nearest right
        ones (the word distance grows with the distance in the text)."""
        present = scan.present(_ALL_FIELDS)
        fields_of = scan.fields_of
        left = 0
        lefts_found = spec.left_sids & present
        for sid in lefts_found:
            left |= fields_of[sid]
        left &= spec.mask
        if not left:
            return False
        right = 0
        rights_found = spec.right_sids & present
        for sid in rights_found:
            right |= fields_of[sid]
        both = left & right
        if not both:
            return False
        matched = False
        norms = scan.norms
        for fi in _FIELDS_IN[both]:
            if into is None and not spec.regex:  # the common case, made short
                if spec.casefold is not None:
                    text: Normalized | None = norms[(fi, spec.casefold)]
                else:  # both kinds: as _near_text, the folded text if it lines up
                    text = norms[(fi, True)]
                    exact = norms.get((fi, False))
                    if exact is not None and len(exact.text) != len(text.text):
                        text = None
                if text is not None:
                    spans = scan.span_view
                    left_spans = [o for sid in lefts_found
                                  for o in spans.get(sid << _SHIFT | fi, ())]
                    right_spans = [o for sid in rights_found
                                   for o in spans.get(sid << _SHIFT | fi, ())]
                    if left_spans and right_spans and self._near_any(
                            spec, text, left_spans, right_spans):
                        return True
                    continue
            lefts = self._near_side(spec.left, lefts_found, fi, scan)
            rights = self._near_side(spec.right, rights_found, fi, scan)
            text = self._near_text(lefts, rights, fi, scan)
            if text is None:  # the sides were found in texts that do not line up
                if self._near_exact(spec, fi, lefts, rights, scan, into):
                    if into is None:
                        return True
                    matched = True
                continue
            if into is None:
                if self._near_any(spec, text, lefts, rights):
                    return True
                continue
            for a in lefts:
                for b in rights:
                    if self._close(spec, text, a, b):
                        matched = True
                        into.append((fi, a[2], a[3], a[4]))
                        into.append((fi, b[2], b[3], b[4]))
        return matched

    @staticmethod
    def _near_side(side: dict[int, tuple[str, ...]], found: frozenset[int], fi: int,
                   scan: Scan) -> list[_NearOcc]:
        """(start, end, original start, original end, label, sid) of a NEAR side's
        occurrences in field ``fi`` (``found``: its searches found in some field)."""
        out = []
        spans = scan.span_view
        for sid in found:
            key = sid << _SHIFT | fi
            occurrences = spans.get(key)
            if occurrences:
                original = scan.original(key)
                for label in side[sid]:
                    for (s, e), (o_s, o_e) in zip(occurrences, original, strict=True):
                        out.append((s, e, o_s, o_e, label, sid))
        return out

    def _near_text(self, lefts: list[_NearOcc],
                   rights: list[_NearOcc], fi: int, scan: Scan
                   ) -> Normalized | None:
        """The text to count words in, or None to count as the reference does. Case-folded
        and exact text have the same words where they have the same length (folding one
        character to one keeps its class); a regular expression may match no letter, and
        then the count must start from the beginning of the text."""
        searches = self.searches
        kinds = {searches[o[5]].casefold for o in (*lefts, *rights)}
        if any(searches[o[5]].pattern.regex for o in (*lefts, *rights)):
            return None
        if len(kinds) == 1:
            return scan.norms[(fi, kinds.pop())]
        folded, exact = scan.norms[(fi, True)], scan.norms[(fi, False)]
        return folded if len(folded.text) == len(exact.text) else None

    @staticmethod
    def _close(spec: _Near, text: Normalized, a: tuple[Any, ...],
               b: tuple[Any, ...]) -> bool:
        """Whether occurrences ``a`` (left) and ``b`` (right), (start, end, …), are within
        the distance."""
        if spec.ordered:
            if b[0] <= a[0]:
                return False
            first, second = a, b
        elif a[0] <= b[0]:
            first, second = a, b
        else:
            first, second = b, a
        last = first[1] - 1
        if second[0] <= last:  # they overlap: no word between
            return True
        limit = spec.distance + 1
        if text.wide:  # astral letters: counted one by one
            return units_between(text.text, last, second[0], limit) <= limit
        return words_within(text.text, last, second[0], limit)

    def _near_any(self, spec: _Near, text: Normalized, lefts: Sequence[tuple[Any, ...]],
                  rights: Sequence[tuple[Any, ...]]) -> bool:
        """Whether any pair is close: for each left occurrence only the right ones nearest
        to it can be — the first that starts at or after it, and (without order) the one
        that ends last among those that start before it."""
        rights = sorted(rights)
        starts = [r[0] for r in rights]
        reach: list[tuple[Any, ...]] = []  # the latest end so far
        for r in rights:
            reach.append(r if not reach or r[1] > reach[-1][1] else reach[-1])
        close = self._close
        for a in lefts:
            i = (bisect_right if spec.ordered else bisect_left)(starts, a[0])
            if i < len(rights) and close(spec, text, a, rights[i]):
                return True
            if not spec.ordered and i > 0 and close(spec, text, a, reach[i - 1]):
                return True
        return False

    def _near_exact(self, spec: _Near, fi: int, lefts: list[_NearOcc],
                    rights: list[_NearOcc], scan: Scan,
                    into: list[HitKey] | None) -> bool:
        """The reference's way: word numbers counted from the start of each side's text."""
        def numbered(o: _NearOcc) -> tuple[int, int, int]:
            index = scan.words(fi, self.searches[o[5]].casefold)
            return (o[0], *index.span(o[0], o[1]))

        matched = False
        for a in lefts:
            a_start, a_first, a_last = numbered(a)
            for b in rights:
                b_start, b_first, b_last = numbered(b)
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
                    into.append((fi, a[2], a[3], a[4]))
                    into.append((fi, b[2], b[3], b[4]))
        return matched


def _bits(positions: Iterable[int]) -> int:
    """An integer with the given bits set."""
    ordered = sorted(set(positions))
    if not ordered:
        return 0
    flags = bytearray(ordered[-1] // 8 + 1)
    for p in ordered:
        flags[p >> 3] |= 1 << (p & 7)
    return int.from_bytes(flags, "little")


def _is_word(c: str) -> bool:
    return c in word_chars() or c > "\uffff" and is_word_char(c)


@lru_cache(maxsize=1)
def _word_bitmap() -> bytes:
    """The word characters of the BMP as 65,536 bits, for the compiled search."""
    flags = bytearray(8192)
    for c in word_chars():
        code = ord(c)
        flags[code >> 3] |= 1 << (code & 7)
    return bytes(flags)


@lru_cache(maxsize=1)
def _unspaced_bitmap() -> bytes:
    """The characters of unspaced scripts in the BMP as 65,536 bits, for the compiled NEAR."""
    flags = bytearray(8192)
    for lo, hi in UNSPACED_RANGES:  # what is_unspaced looks up
        for code in range(lo, min(hi, 0xFFFF) + 1):
            flags[code >> 3] |= 1 << (code & 7)
    return bytes(flags)


_RUN, _PREFIX, _ONE, _TWO = range(4)  # the compiled search's tables (bot/rules/_speedups.c)


def _filing(key: str, values: tuple[_Value, ...]) -> tuple[int, str]:
    """Where the compiled search looks a key up. A key that starts with a word character
    and is left-bounded can only be found where a run of word characters starts: under its
    first run (the whole text of the run the text has there), or — when a prefix or a key
    that is not right-bounded ends inside the run — under its text, looked up for each
    prefix of the run. Any other key is looked up at every position, under its first two
    characters (or its one)."""
    if _is_word(key[0]) and all(left for _, left, _, _, _ in values):
        run = 1
        while run < len(key) and _is_word(key[run]):
            run += 1
        if run < len(key) or all(right and not prefix for _, _, right, prefix, _ in values):
            return _RUN, key[:run]
        return _PREFIX, key
    return (_ONE, key) if len(key) == 1 else (_TWO, key[:2])


def _mask(fields: Iterable[str]) -> int:
    mask = 0
    for name in fields:
        mask |= 1 << _FIELD_INDEX[name]
    return mask


def patterns_of(node: Compiled) -> list[Pattern]:
    """Every pattern in a compiled query, in order (bench/match.py counts them too)."""
    if isinstance(node, Leaf):
        return list(node.patterns)
    if isinstance(node, AllOf | AnyOf):
        return [p for c in node.children for p in patterns_of(c)]
    if isinstance(node, Negate | InField):
        return patterns_of(node.child)
    if isinstance(node, Proximity):
        return [*node.left.patterns, *node.right.patterns]
    return []


def rule_patterns(rule: Rule) -> list[Pattern]:
    """Every pattern a rule searches for: its query, its exclusions, its tracked list."""
    patterns = patterns_of(rule.compiled)
    for _, node in rule.compiled_excludes:
        patterns += patterns_of(node)
    if rule.track_list is not None:
        patterns += rule.track_list.patterns
    return patterns


def _feed_is(scan: Scan, name: str) -> bool:
    return scan.feed_name == name or name in scan.feed_tags


def _lang_is(scan: Scan, code: str) -> bool:
    lang = (scan.entry.language or "").casefold().replace("_", "-")
    return lang == code or lang.startswith(code + "-")


@dataclass
class _Codegen:
    """Writes every rule's test, exclusions and hit collector as Python functions over a
    :class:`Scan`, compiled together in one module. No text from a rule file reaches the
    generated source: numbers are written out, everything else goes through ``C``. With
    the compiled matcher, the same as :attr:`code` (see ``_OP_ANY``) for it to evaluate."""

    engine: Engine
    constants: list[Any] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    written: list[_Written] = field(default_factory=list)
    _uses_masks: set[int] = field(default_factory=set)
    # The same tests and hit statements as code for the compiled matcher, or None without it.
    code: list[int] | None = None
    code_constants: list[Any] = field(default_factory=list)

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
        spec = self.const(self._near(node, mask))
        return (f"({self._leaf_truth(node.left.patterns, mask)} and "
                f"{self._leaf_truth(node.right.patterns, mask)} and near({spec}, d, None))")

    def _leaf_truth(self, patterns: Iterable[Pattern], mask: int) -> str:
        self.engine.fields_used |= mask
        sids = sorted({self.engine.sid(p) for p in patterns})
        if len(sids) == 1:
            return f"(F({sids[0]}, 0) & {mask})"
        return f"(not {self._present(mask)}.isdisjoint({self.const(frozenset(sids))}))"

    def _near(self, node: Proximity, mask: int) -> _Near:
        engine = self.engine
        engine.fields_used |= mask
        sides: list[dict[int, tuple[str, ...]]] = []
        for leaf in (node.left, node.right):
            labels: dict[int, tuple[str, ...]] = {}
            for p in leaf.patterns:
                sid = engine.sid(p)
                labels[sid] = (*labels.get(sid, ()), p.label)
            sides.append(labels)
        left, right = sides
        searches = [engine.searches[sid] for sid in (*left, *right)]
        kinds = {s.casefold for s in searches}
        casefold = kinds.pop() if len(kinds) == 1 and not any(
            s.pattern.regex for s in searches) else None
        return _Near(left, right, frozenset(left), frozenset(right), node.distance,
                     node.ordered, mask, casefold, any(s.pattern.regex for s in searches))

    def hits(self, node: Compiled, mask: int,
             free: dict[int, list[Pattern]] | None,
             guarded: list[tuple[str, set[int], dict[int, list[Pattern]], Compiled, int]]
             | None = None) -> list[_Statement]:
        """Statements adding the hits that made a *true* ``node`` true: the occurrences
        :func:`bot.rules.match.evaluate` returns for it. Terms that need no condition go to
        ``free`` (by field mask) instead, when it is given; an AND inside an OR whose terms
        need no other condition goes to ``guarded`` (its test, the masks the test uses, its
        terms, and the AND itself with its mask)."""
        if isinstance(node, Leaf):
            if free is not None:
                free.setdefault(mask, []).extend(node.patterns)
                return []
            return [("group", mask, node.patterns)]
        if isinstance(node, InField):
            return self.hits(node.child, 1 << _FIELD_INDEX[node.field], free, guarded)
        if isinstance(node, Proximity):
            return [("near", node, mask)]
        if isinstance(node, AllOf | AnyOf):
            statements: list[_Statement] = []
            for child in node.children:
                if isinstance(node, AnyOf) and _needs_guard(child):
                    if guarded is not None:
                        terms: dict[int, list[Pattern]] = {}
                        if not self.hits(child, mask, terms):
                            outer, self._uses_masks = self._uses_masks, set()
                            guarded.append((self.truth(child, mask), self._uses_masks, terms,
                                            child, mask))
                            self._uses_masks |= outer
                            continue
                    inner = self.hits(child, mask, None)
                    if inner:
                        statements.append(("if", child, mask, inner))
                else:
                    statements += self.hits(child, mask, free, guarded)
            return statements
        return []  # NOT, feed:, lang: name no text

    def _lines(self, statements: list[_Statement], indent: str) -> list[str]:
        """The statements as Python, adding to ``out``."""
        lines: list[str] = []
        for statement in statements:
            if statement[0] == "group":
                _, mask, patterns = statement
                lines.append(f"{indent}out += G({self.engine.group(patterns, mask)})")
            elif statement[0] == "near":
                _, node, mask = statement
                lines.append(f"{indent}near({self.const(self._near(node, mask))}, d, out)")
            else:
                _, node, mask, inner = statement
                lines.append(f"{indent}if {self.truth(node, mask)}:")
                lines += self._lines(inner, indent + "    ")
        return lines

    # --- the same as code for the compiled matcher (see _OP_ANY) ------------------------

    def _emit(self, op: int, body: list[int]) -> list[int]:
        return [op, len(body) + 2, *body]

    def _code_constant(self, value: Any) -> int:
        self.code_constants.append(value)
        return len(self.code_constants) - 1

    def node(self, node: Compiled, mask: int) -> list[int]:
        """:meth:`truth` as code."""
        if isinstance(node, Leaf):
            return self._any(node.patterns, mask)
        if isinstance(node, AllOf):
            return self._emit(_OP_AND, [x for c in node.children for x in self.node(c, mask)])
        if isinstance(node, AnyOf):
            leaves = [p for c in node.children if isinstance(c, Leaf) for p in c.patterns]
            body = self._any(leaves, mask) if leaves else []
            for c in node.children:
                if not isinstance(c, Leaf):
                    body += self.node(c, mask)
            return self._emit(_OP_OR, body)
        if isinstance(node, Negate):
            return self._emit(_OP_NOT, self.node(node.child, mask))
        if isinstance(node, InField):
            return self.node(node.child, 1 << _FIELD_INDEX[node.field])
        if isinstance(node, FeedIs):
            return self._emit(_OP_CALL, [self._code_constant(partial(_feed_is, name=node.name))])
        if isinstance(node, LangIs):
            return self._emit(_OP_CALL, [self._code_constant(partial(_lang_is, code=node.code))])
        near = self._emit(_OP_NEAR, [self._code_constant(self._near(node, mask))])
        return self._emit(_OP_AND, [*self._any(node.left.patterns, mask),
                                    *self._any(node.right.patterns, mask), *near])

    def _any(self, patterns: Iterable[Pattern], mask: int) -> list[int]:
        return self._emit(_OP_ANY, [mask, *sorted({self.engine.sid(p) for p in patterns})])

    def statements(self, statements: list[_Statement]) -> list[int]:
        """:meth:`_lines` as code."""
        code: list[int] = []
        engine = self.engine
        for statement in statements:
            if statement[0] == "group":
                _, mask, patterns = statement
                code += self._emit(_ST_GROUP, [mask, *sorted({engine.pid(p) for p in patterns})])
            elif statement[0] == "near":
                _, node, mask = statement
                left = sorted({engine.pid(p) for p in node.left.patterns})
                right = sorted({engine.pid(p) for p in node.right.patterns})
                code += self._emit(_ST_NEAR, [self._code_constant(self._near(node, mask)),
                                              len(left), *left, *right])
            else:
                _, node, mask, inner = statement
                code += self._emit(_ST_IF, [*self.node(node, mask), *self.statements(inner)])
        return code

    def _at(self, code: list[int]) -> int:
        """Add ``code`` to :attr:`code`: where it starts."""
        assert self.code is not None
        self.code += code
        return len(self.code) - len(code)

    def program(self, rule: Rule, *, test: bool) -> None:
        """Write the functions for ``rule`` (its test only when ``test``)."""
        mask = _mask(rule.fields)
        n = len(self.written)
        if test:
            self._uses_masks = set()
            body = self.truth(rule.compiled, mask)
            self._function(f"t{n}", body, self._uses_masks)
        for k, (_, node) in enumerate(rule.compiled_excludes):
            self._uses_masks = set()
            body = self.truth(node, mask)
            self._function(f"x{n}_{k}", body, self._uses_masks)
        self._uses_masks = set()
        # A false term has no occurrences, so every term outside an AND-inside-an-OR can be
        # collected without a condition: merged into one group per field mask.
        free: dict[int, list[Pattern]] = {}
        guarded: list[tuple[str, set[int], dict[int, list[Pattern]], Compiled, int]] = []
        statements = self.hits(rule.compiled, mask, free, guarded)
        lines = self._lines(statements, "    ")
        if rule.track_list is not None:
            free.setdefault(mask, []).extend(rule.track_list.patterns)
        if lines:
            prologue = "".join(f"    p{m} = d.present({m})\n" for m in sorted(self._uses_masks))
            self.source.append(f"def h{n}(d):\n    F = d.fields_of.get\n    G = d.group\n"
                               f"{prologue}    out = []\n"
                               + "".join(line + "\n" for line in lines) + "    return out\n")
        for k, (body, used, *_) in enumerate(guarded):
            self._function(f"g{n}_{k}", body, used)
        code: tuple[int, tuple[int, ...], tuple[int, ...], int] = (-1, (), (), -1)
        if self.code is not None:
            at = self._at
            code = (at(self.node(rule.compiled, mask)) if test else -1,
                    tuple(at(self.node(node, mask)) for _, node in rule.compiled_excludes),
                    tuple(at(self.node(child, m)) for *_, child, m in guarded),
                    at(self._emit(_ST_ALL, self.statements(statements))) if statements else -1)
        self.written.append(_Written(rule, test, len(rule.compiled_excludes), bool(lines),
                                     self._groups(free),
                                     tuple(self._groups(terms) for _, _, terms, *_ in guarded),
                                     code))

    def _groups(self, terms: dict[int, list[Pattern]]) -> Groups:
        for m in terms:
            self.engine.fields_used |= m
        return tuple((m, frozenset(self.engine.pid(p) for p in patterns))
                     for m, patterns in sorted(terms.items()))

    def _function(self, name: str, expr: str, masks: set[int]) -> None:
        """``def name(d): return bool(expr)``, with the presence sets ``expr`` uses."""
        prologue = "".join(f"    p{m} = d.present({m})\n" for m in sorted(masks))
        self.source.append(f"def {name}(d):\n    F = d.fields_of.get\n{prologue}"
                           f"    return bool({expr})\n")

    def finish(self) -> list[_Program]:
        """Compile the module (one ``compile`` for every rule) and bind the functions."""
        namespace: dict[str, Any] = {"C": self.constants, "near": self.engine.near,
                                     "lang": _lang_is}
        code = compile("".join(self.source), "<policybot rules>", "exec")
        exec(code, namespace)  # noqa: S102 - generated from the rules' trees, see the docstring
        programs = []
        for n, w in enumerate(self.written):
            simple = not w.extra and not w.guarded and len(w.free) == 1
            mask, pids = w.free[0] if simple else (0, frozenset[int]())
            rule = w.rule
            programs.append(_Program(
                rule.id,
                rule.version,
                namespace[f"t{n}"] if w.test else None,
                tuple(namespace[f"x{n}_{k}"] for k in range(w.excludes)),
                w.free,
                tuple((namespace[f"g{n}_{k}"], groups) for k, groups in enumerate(w.guarded)),
                namespace[f"h{n}"] if w.extra else None,
                rule.track_list.names if rule.track_list is not None else frozenset(),
                simple,
                mask,
                pids,
            ))
        return programs


def _needs_guard(node: Compiled) -> bool:
    """Whether ``node``'s hit statements must wait for it to be true (inside an OR): an AND
    of terms contributes its terms only when all of them occur."""
    if isinstance(node, InField):
        return _needs_guard(node.child)
    return isinstance(node, AllOf)
