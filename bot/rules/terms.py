"""Searchable patterns and term lists.

A *pattern* is one normalised string to look for, with its boundary and case behaviour. A
*term list* (``terms:`` in a rule, or ``rules/lists/<name>.yaml``) is a list of entries; an
entry has a canonical name and variants (aliases in other languages, spellings), and every
hit on a variant reports the canonical name, which is what ``track`` records.

:func:`find_all` searches one pattern (``str.find``, or the compiled regular expression);
``bot.rules.engine`` finds every literal pattern of every rule in one Aho-Corasick pass and
applies the same boundary checks (:func:`accept`).

Regular expressions run on Google's RE2 (linear time: no pattern can make matching hang, and
backreferences and look-arounds are refused), against the normalised text of a field.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import re2

from bot.rules.query import MIN_PREFIX_STEM
from bot.rules.text import has_unspaced, is_unspaced, is_word_char, normalize_term


@dataclass(frozen=True, slots=True)
class Pattern:
    """One string to search for in normalised text.

    ``left_bounded``/``right_bounded``: the pattern starts/ends with a word character of a
    spaced script, so the text must not continue with a word character on that side
    (``OSA`` is not in ``Osaka``). An edge in Han/kana/Hangul has no boundary (``GCAP``
    is in ``日英伊のGCAP計画``, ``計画`` is in ``GCAP計画``). A ``prefix`` pattern extends its
    hit to the end of the word (``radar*`` → ``radars``).
    """

    text: str
    case_sensitive: bool
    prefix: bool
    left_bounded: bool
    right_bounded: bool
    label: str
    regex: bool = False

    @property
    def key(self) -> tuple[str, bool, bool, bool]:
        """What the search depends on (not the label): patterns with one key share a search."""
        return (self.text, self.case_sensitive, self.prefix, self.regex)


class PatternError(ValueError):
    """A term that cannot be searched for; the message says why."""


def make_pattern(
    text: str, *, case_sensitive: bool = False, prefix: bool = False, label: str | None = None
) -> Pattern:
    """Normalise ``text`` into a :class:`Pattern` or raise :class:`PatternError`.

    Rules share terms (a country, a minister's title), so patterns are kept: the same
    arguments give the same, immutable, :class:`Pattern` without normalising again.
    """
    return _make_pattern(text, case_sensitive, prefix, label)


@lru_cache(maxsize=65536)
def _make_pattern(text: str, case_sensitive: bool, prefix: bool, label: str | None) -> Pattern:
    norm = normalize_term(text, casefold=not case_sensitive)
    shown = text.strip() + ("*" if prefix else "")
    if not norm:
        raise PatternError(f"empty term {shown!r}")
    if any("\ud800" <= c <= "\udfff" for c in norm):
        # YAML's "\ud842\udf9f" gives two halves of a character, not the character.
        raise PatternError(f"term {shown!r} has a lone surrogate: write the character itself "
                           "or its \\U escape (e.g. \\U00020B9F)")
    if not any(is_word_char(c) or is_unspaced(c) for c in norm):
        raise PatternError(f"term {shown!r} has no letters or digits")
    if prefix:
        if is_unspaced(norm[-1]):
            raise PatternError(
                f"{shown!r}: terms in Japanese/Chinese/Korean script already match inside "
                "words; drop the *"
            )
        stem = len(norm)
        if stem < MIN_PREFIX_STEM:
            raise PatternError(
                f"{shown!r}: a prefix needs at least {MIN_PREFIX_STEM} characters before the "
                f"* (a shorter stem matches too many words); write the words out instead"
            )
    return Pattern(
        text=norm,
        case_sensitive=case_sensitive,
        prefix=prefix,
        left_bounded=is_word_char(norm[0]),
        right_bounded=is_word_char(norm[-1]),
        label=label if label is not None else shown,
    )


MAX_REGEX_LENGTH = 500
MAX_REGEX_MEMORY = 8 << 20  # bytes of RE2 program memory per expression


@lru_cache(maxsize=4096)
def compiled_regex(text: str, case_sensitive: bool) -> Any:
    """The RE2 program for a regex term (cached: rules that share one share the program)."""
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False
    options.max_mem = MAX_REGEX_MEMORY
    return re2.compile(text, options)


def make_regex_pattern(text: str, *, case_sensitive: bool = False) -> Pattern:
    """A ``/regex/`` term, checked now so that a bad one is a load error, not a crash later."""
    label = f"{'case:' if case_sensitive else ''}/{text}/"
    if len(text) > MAX_REGEX_LENGTH:
        raise PatternError(f"regular expression longer than {MAX_REGEX_LENGTH} characters")
    try:
        program = compiled_regex(text, case_sensitive)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise PatternError(
            f"invalid regular expression /{text}/: {detail} (RE2 syntax: no backreferences "
            "or look-arounds)"
        ) from None
    if program.search("") is not None:
        raise PatternError(
            f"/{text}/ matches empty text, so it would match every entry; require at least "
            "one character (e.g. + instead of *)"
        )
    return Pattern(text=text, case_sensitive=case_sensitive, prefix=False, left_bounded=False,
                   right_bounded=False, label=label, regex=True)


def find_all(pattern: Pattern, text: str) -> list[tuple[int, int]]:
    """Non-overlapping ``[start, end)`` spans of ``pattern`` in normalised ``text``."""
    if pattern.regex:
        program = compiled_regex(pattern.text, pattern.case_sensitive)
        return [m.span() for m in program.finditer(text) if m.end() > m.start()]
    spans: list[tuple[int, int]] = []
    needle = pattern.text
    size = len(text)
    i = text.find(needle)
    while i != -1:
        end = i + len(needle)
        if pattern.left_bounded and i > 0 and is_word_char(text[i - 1]):
            i = text.find(needle, i + 1)
            continue
        if pattern.prefix:
            while end < size and is_word_char(text[end]):
                end += 1
        elif pattern.right_bounded and end < size and is_word_char(text[end]):
            i = text.find(needle, i + 1)
            continue
        spans.append((i, end))
        i = text.find(needle, end)
    return spans


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One entry of a term list: its canonical name and every pattern that stands for it."""

    name: str
    patterns: tuple[Pattern, ...]


@dataclass(frozen=True, slots=True)
class TermList:
    """A named list of entries: rule-local ``$name`` or shared ``@name``."""

    name: str
    entries: tuple[ListEntry, ...]

    @property
    def patterns(self) -> tuple[Pattern, ...]:
        return tuple(p for e in self.entries for p in e.patterns)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(e.name for e in self.entries)


@lru_cache(maxsize=65536)
def looks_like_acronym(text: str) -> bool:
    """All-caps Latin of four letters or fewer: the terms that collide (OSA, GCAP, SDF)."""
    letters = [c for c in text if c.isalpha()]
    return (
        0 < len(letters) <= 4
        and all(c.isupper() for c in letters)
        and not has_unspaced(text)
        and " " not in text.strip()
    )
