"""Every rule compiled together: one multi-pattern pass per field, then only the rules whose
terms occurred are evaluated, each as a compiled expression over a bitset.

DESIGN.md ("Rules"): matching cost grows with the text, not with the number of rules.

    entry ─ normalise each field once ─ Aho-Corasick over all literal terms (+ RE2 regexes)
          ─ boundary checks ─ occurrences by (search, field)
          ─ bits for the rules that use them ─ candidate rules ─ compiled query / exclusions
          ─ hits only for the rules that matched

Each rule numbers its own patterns; a pattern in a field is one bit (``local * NF + field``),
so a leaf of the query is one integer mask, an OR of leaves is one mask, and a query is a
Python expression of ``&``, ``and``, ``or`` and ``not`` compiled once with ``eval`` from the
rule's syntax tree (no text from the rule file reaches the generated source: constants go
through a table). The results are exactly those of :func:`bot.rules.match.evaluate`;
``tests/test_rules_engine.py`` checks the two against each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
from bot.rules.ruleset import Rule, sorted_hits
from bot.rules.terms import Pattern, compiled_regex
from bot.rules.text import Normalized, WordIndex, is_word_char, normalize

NF = len(TEXT_FIELDS)
_FIELD_INDEX = {name: i for i, name in enumerate(TEXT_FIELDS)}

Test = Callable[[int, "Scan"], Any]
Contribution = Callable[[int, "Scan", list["_Occ"]], int]


@dataclass(frozen=True, slots=True)
class _Search:
    """One distinct search (a pattern's text, case, prefix and regex flag)."""

    pattern: Pattern
    casefold: bool


_Occ = tuple[int, int, int, int, str]  # (search id, field index, start, end, label)
# (search id, left-bounded, right-bounded, prefix, exact text for a case-sensitive pattern)
_Value = tuple[int, bool, bool, bool, str | None]


@dataclass(frozen=True, slots=True)
class _Automaton:
    ac: ahocorasick_rs.AhoCorasick
    values: list[tuple[_Value, ...]]  # by pattern index


class Scan:
    """One entry from one feed, searched once for every pattern of every rule."""

    __slots__ = ("entry", "feed_name", "feed_tags", "norms", "spans", "hits", "_words")

    def __init__(self, entry: Entry, feed_name: str, feed_tags: frozenset[str]) -> None:
        self.entry = entry
        self.feed_name = feed_name
        self.feed_tags = feed_tags
        self.norms: dict[tuple[int, bool], Normalized] = {}
        self.spans: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (sid, field) → spans
        self.hits: dict[tuple[int, int], list[Hit]] = {}  # (pattern id, field) → hits
        self._words: dict[tuple[int, bool], WordIndex] = {}

    def words(self, fi: int, casefold: bool) -> WordIndex:
        key = (fi, casefold)
        index = self._words.get(key)
        if index is None:
            index = self._words[key] = WordIndex(self.norms[key].text)
        return index

    def hit(self, occ: _Occ, casefold: bool) -> Hit:
        sid, fi, start, end, label = occ
        o_start, o_end = self.norms[(fi, casefold)].original_span(start, end)
        return Hit(TEXT_FIELDS[fi], o_start, o_end, label)


@dataclass(frozen=True, slots=True)
class _Near:
    """A compiled NEAR/ONEAR: the patterns on each side (as (sid, label)) and its fields."""

    left: tuple[tuple[int, str], ...]
    right: tuple[tuple[int, str], ...]
    distance: int
    ordered: bool
    fields: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    """One rule, compiled for the engine."""

    rule: Rule
    pids: tuple[int, ...]  # local pattern number → global pattern id
    test: Test
    excludes: tuple[tuple[str, Test], ...]
    contribution: Contribution
    track_mask: int
    feeds: frozenset[str]
    need: int  # the query cannot be true unless one of these bits is set
    tracked: frozenset[str]  # the track list's canonical names


class Engine:
    """All rules' patterns in two automata (case-folded and exact) plus the regexes."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.searches: list[_Search] = []
        self._sid_by_key: dict[tuple[str, bool, bool, bool], int] = {}
        self.pid_sid: list[int] = []
        self.pid_label: list[str] = []
        self._pid_by_key: dict[tuple[int, str], int] = {}
        # sid → [(plan index, the bit of the local pattern in the first field)]
        self.users: list[list[tuple[int, int]]] = []
        self.plans: list[_Plan] = []
        self.always: list[int] = []  # plans that can match without any term occurring
        fields: set[int] = set()
        for rule in rules:
            self._plan(rule, fields)
        self.fields = tuple(sorted(fields))
        # One automaton over case-folded keys finds every literal; a case-sensitive pattern
        # is then compared with the exact text (the two share offsets when folding keeps the
        # length, which is nearly always). The second automaton is for the other case.
        self._all = self._automaton(exact_too=True)
        self._exact = self._automaton(exact_too=False)
        self._odd = self._automaton(exact_too=False, odd_only=True)
        self._regexes = [(sid, s) for sid, s in enumerate(self.searches) if s.pattern.regex]
        self._needs_cs = any(not s.casefold for s in self.searches)

    # --- compiling ---------------------------------------------------------------------

    def _sid(self, pattern: Pattern) -> int:
        sid = self._sid_by_key.get(pattern.key)
        if sid is None:
            sid = self._sid_by_key[pattern.key] = len(self.searches)
            self.searches.append(_Search(pattern, not pattern.case_sensitive))
            self.users.append([])
        return sid

    def _pid(self, pattern: Pattern) -> int:
        sid = self._sid(pattern)
        key = (sid, pattern.label)
        pid = self._pid_by_key.get(key)
        if pid is None:
            pid = self._pid_by_key[key] = len(self.pid_sid)
            self.pid_sid.append(sid)
            self.pid_label.append(pattern.label)
        return pid

    def _plan(self, rule: Rule, fields: set[int]) -> None:
        index = len(self.plans)
        compiler = _RuleCompiler(self, rule, fields)
        test = compiler.test(rule.compiled)
        contribution = compiler.contribution(rule.compiled)
        excludes = tuple((name, compiler.test(node)) for name, node in rule.compiled_excludes)
        track_mask = 0
        if rule.track_list is not None:
            track_mask = compiler.mask(rule.track_list.patterns, compiler.default_fields)
        need = compiler.need(rule.compiled, compiler.default_fields)
        for pid, local in compiler.locals.items():
            self.users[self.pid_sid[pid]].append((index, 1 << (local * NF)))
        pids = tuple(sorted(compiler.locals, key=compiler.locals.__getitem__))
        tracked = rule.track_list.names if rule.track_list is not None else frozenset()
        self.plans.append(_Plan(rule, pids, test, excludes, contribution, track_mask,
                                frozenset(rule.feeds), need or 0, tracked))
        if need is None:
            self.always.append(index)

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
        return _Automaton(
            ahocorasick_rs.AhoCorasick(keys, matchkind=ahocorasick_rs.MatchKind.Standard),
            [tuple(by_text[k]) for k in keys],
        )

    # --- matching ----------------------------------------------------------------------

    def scan(self, entry: Entry, feed_name: str, feed_tags: Iterable[str] = ()) -> Scan:
        """Normalise and search every field any rule looks at."""
        scan = Scan(entry, feed_name, frozenset(feed_tags))
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
                    self._search(self._odd, exact.text, None, fi, scan.spans)
                else:
                    folded = normalize(raw)
                    self._search(self._exact, exact.text, None, fi, scan.spans)
                scan.norms[(fi, False)] = exact
                self._search(self._all, folded.text, exact.text if shared else None, fi,
                             scan.spans)
            else:
                folded = exact = normalize(raw)
                self._search(self._all, folded.text, None, fi, scan.spans)
            scan.norms[(fi, True)] = folded
            for sid, search in self._regexes:
                text = (folded if search.casefold else exact).text
                found = [m.span() for m in compiled_regex(
                    search.pattern.text, search.pattern.case_sensitive).finditer(text)
                    if m.end() > m.start()]
                if found:
                    scan.spans[(sid, fi)] = found
        return scan

    @staticmethod
    def _search(
        automaton: _Automaton | None, text: str, exact_text: str | None, fi: int,
        spans: dict[tuple[int, int], list[tuple[int, int]]],
    ) -> None:
        """Every occurrence of every pattern, with the boundary rules of
        :func:`bot.rules.terms.find_all` (non-overlapping per pattern, left to right).

        ``exact_text`` (same length as ``text``) is where case-sensitive patterns are
        compared; without it they are skipped (the caller runs the exact pass)."""
        if automaton is None:
            return
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
                if left and start > 0 and is_word_char(text[start - 1]):
                    continue
                hit_end = stop
                if prefix:
                    while hit_end < size and is_word_char(text[hit_end]):
                        hit_end += 1
                elif right and stop < size and is_word_char(text[stop]):
                    continue
                last_end[sid] = hit_end
                found = spans.get((sid, fi))
                if found is None:
                    spans[(sid, fi)] = [(start, hit_end)]
                else:
                    found.append((start, hit_end))

    def match(self, entry: Entry, *, feed_name: str, feed_tags: Iterable[str] = ()) -> list[Match]:
        """Matches of every enabled rule whose scope admits this feed, in rule order."""
        scan = self.scan(entry, feed_name, feed_tags)
        bits: dict[int, int] = {}
        users = self.users
        get = bits.get
        for sid, fi in scan.spans:
            for plan_index, base in users[sid]:
                bits[plan_index] = get(plan_index, 0) | (base << fi)
        for plan_index in self.always:
            bits.setdefault(plan_index, 0)
        out: list[Match] = []
        for plan_index in sorted(bits):
            plan = self.plans[plan_index]
            rule = plan.rule
            if not rule.enabled:
                continue
            if plan.feeds and feed_name not in plan.feeds and plan.feeds.isdisjoint(
                    scan.feed_tags):
                continue
            p = bits[plan_index]
            if not p & plan.need and plan.need:
                continue
            if not plan.test(p, scan):
                continue
            if any(test(p, scan) for _, test in plan.excludes):
                continue
            out.append(Match(rule.id, rule.version, self.hits(plan, p, scan)))
        return out

    def hits(self, plan: _Plan, p: int, scan: Scan) -> tuple[Hit, ...]:
        extra: list[_Occ] = []
        mask = plan.contribution(p, scan, extra) | (p & plan.track_mask)
        found: list[Hit] = []
        while mask:
            low = mask & -mask
            local, fi = divmod(low.bit_length() - 1, NF)
            mask ^= low
            pid = plan.pids[local]
            cached = scan.hits.get((pid, fi))
            if cached is None:
                sid = self.pid_sid[pid]
                label = self.pid_label[pid]
                norm = scan.norms[(fi, self.searches[sid].casefold)]
                name = TEXT_FIELDS[fi]
                cached = scan.hits[(pid, fi)] = [
                    Hit(name, *norm.original_span(start, end), label)
                    for start, end in scan.spans[(sid, fi)]
                ]
            found.extend(cached)
        for occ in extra:
            found.append(scan.hit(occ, self.searches[occ[0]].casefold))
        return sorted_hits(found, plan.tracked)

    def near(self, spec: _Near, scan: Scan, into: list[_Occ] | None) -> bool:
        """Whether a NEAR holds (and, with ``into``, every pair that makes it hold)."""
        matched = False
        for fi in spec.fields:
            lefts = self._occurrences(spec.left, fi, scan)
            if not lefts:
                continue
            rights = self._occurrences(spec.right, fi, scan)
            for a, a_fold in lefts:
                a_first, a_last = self._word_span(a, a_fold, scan)
                for b, b_fold in rights:
                    b_first, b_last = self._word_span(b, b_fold, scan)
                    if spec.ordered:
                        if b[2] <= a[2]:
                            continue
                        between = b_first - a_last - 1
                    elif a[2] <= b[2]:
                        between = b_first - a_last - 1
                    else:
                        between = a_first - b_last - 1
                    if between <= spec.distance:
                        if into is None:
                            return True
                        matched = True
                        into.extend((a, b))
        return matched

    def _occurrences(
        self, side: tuple[tuple[int, str], ...], fi: int, scan: Scan
    ) -> list[tuple[_Occ, bool]]:
        out: list[tuple[_Occ, bool]] = []
        for sid, label in side:
            casefold = self.searches[sid].casefold
            for start, end in scan.spans.get((sid, fi), ()):
                out.append(((sid, fi, start, end, label), casefold))
        return out

    @staticmethod
    def _word_span(occ: _Occ, casefold: bool, scan: Scan) -> tuple[int, int]:
        index = scan.words(occ[1], casefold)
        return index.number(occ[2]), index.number(occ[3] - 1)


class _RuleCompiler:
    """Turns one rule's compiled tree into Python expressions over its pattern bits."""

    def __init__(self, engine: Engine, rule: Rule, fields: set[int]) -> None:
        self.engine = engine
        self.rule = rule
        self.locals: dict[int, int] = {}  # global pattern id → local number
        self.constants: list[Any] = []
        self.default_fields = tuple(_FIELD_INDEX[f] for f in rule.fields)
        self.fields = fields
        fields.update(self.default_fields)

    def local(self, pattern: Pattern) -> int:
        pid = self.engine._pid(pattern)
        number = self.locals.get(pid)
        if number is None:
            number = self.locals[pid] = len(self.locals)
        return number

    def mask(self, patterns: Iterable[Pattern], fields: tuple[int, ...]) -> int:
        self.fields.update(fields)
        mask = 0
        for pattern in patterns:
            base = self.local(pattern) * NF
            for fi in fields:
                mask |= 1 << (base + fi)
        return mask

    def const(self, value: Any) -> str:
        self.constants.append(value)
        return f"C[{len(self.constants) - 1}]"

    def _near(self, node: Proximity, fields: tuple[int, ...]) -> tuple[str, str]:
        """(mask test, constant) for a NEAR: both sides must occur before pairs are checked."""
        left = self.mask(node.left.patterns, fields)
        right = self.mask(node.right.patterns, fields)
        spec = _Near(
            tuple((self.engine._sid(p), p.label) for p in node.left.patterns),
            tuple((self.engine._sid(p), p.label) for p in node.right.patterns),
            node.distance, node.ordered, fields,
        )
        return f"(p & {left} and p & {right})", self.const(spec)

    def truth(self, node: Compiled, fields: tuple[int, ...]) -> str:
        if isinstance(node, Leaf):
            return f"(p & {self.mask(node.patterns, fields)})"
        if isinstance(node, AllOf):
            return "(" + " and ".join(self.truth(c, fields) for c in node.children) + ")"
        if isinstance(node, AnyOf):
            leaves = [c for c in node.children if isinstance(c, Leaf)]
            others = [c for c in node.children if not isinstance(c, Leaf)]
            parts = []
            if leaves:
                parts.append(f"(p & {self.mask((q for c in leaves for q in c.patterns), fields)})")
            parts += [self.truth(c, fields) for c in others]
            return "(" + " or ".join(parts) + ")"
        if isinstance(node, Negate):
            return f"(not {self.truth(node.child, fields)})"
        if isinstance(node, InField):
            return self.truth(node.child, (_FIELD_INDEX[node.field],))
        if isinstance(node, FeedIs):
            name = self.const(node.name)
            return f"(d.feed_name == {name} or {name} in d.feed_tags)"
        if isinstance(node, LangIs):
            return f"lang(d, {self.const(node.code)})"
        test, spec = self._near(node, fields)
        return f"({test} and E.near({spec}, d, None))"

    def contributes(self, node: Compiled, fields: tuple[int, ...]) -> str:
        """An expression for the bits that made a *true* ``node`` true (NEAR pairs go to
        ``ex``); mirrors :func:`bot.rules.match.evaluate`'s choice of occurrences."""
        if isinstance(node, Leaf):
            return f"(p & {self.mask(node.patterns, fields)})"
        if isinstance(node, AllOf):
            return "(" + " | ".join(self.contributes(c, fields) for c in node.children) + ")"
        if isinstance(node, AnyOf):
            parts = []
            for c in node.children:
                if isinstance(c, Leaf):
                    parts.append(self.contributes(c, fields))
                else:
                    parts.append(
                        f"({self.contributes(c, fields)} if {self.truth(c, fields)} else 0)"
                    )
            return "(" + " | ".join(parts) + ")"
        if isinstance(node, InField):
            return self.contributes(node.child, (_FIELD_INDEX[node.field],))
        if isinstance(node, Proximity):
            _, spec = self._near(node, fields)
            return f"(E.near({spec}, d, ex) and 0)"
        return "0"  # NOT, feed:, lang: name no text

    def need(self, node: Compiled, fields: tuple[int, ...]) -> int | None:
        """Bits of which at least one must be set for ``node`` to be true; None when it can
        be true with no pattern at all (NOT, feed:, lang:). For AND, the child with the
        fewest bits: the cheapest necessary condition to test."""
        if isinstance(node, Leaf):
            return self.mask(node.patterns, fields)
        if isinstance(node, Proximity):
            return self.mask(node.left.patterns, fields)
        if isinstance(node, InField):
            return self.need(node.child, (_FIELD_INDEX[node.field],))
        if isinstance(node, AllOf):
            needs = [n for c in node.children if (n := self.need(c, fields)) is not None]
            return min(needs, key=lambda m: m.bit_count()) if needs else None
        if isinstance(node, AnyOf):
            total = 0
            for c in node.children:
                n = self.need(c, fields)
                if n is None:
                    return None
                total |= n
            return total
        return None

    def _compile(self, expression: str, args: str) -> Any:
        namespace = {"C": self.constants, "E": self.engine, "lang": _lang_is}
        return eval(f"lambda {args}: {expression}", namespace)  # noqa: S307 - generated

    def test(self, node: Compiled) -> Test:
        fn: Test = self._compile(self.truth(node, self.default_fields), "p, d")
        return fn

    def contribution(self, node: Compiled) -> Contribution:
        fn: Contribution = self._compile(self.contributes(node, self.default_fields), "p, d, ex")
        return fn


def _lang_is(scan: Scan, code: str) -> bool:
    lang = (scan.entry.language or "").casefold().replace("_", "-")
    return lang == code or lang.startswith(code + "-")
