"""Text normalisation for matching, with a map back to the original offsets.

Entry text and rule terms go through the same steps, so that a term written one way finds
the text written another:

- Unicode NFKC (``ＯＳＡ`` → ``OSA``, half-width ``ﾌｨﾘﾋﾟﾝ`` → ``フィリピン``, ``ﬁ`` → ``fi``);
- case folding (``str.casefold``), unless the term is case-sensitive;
- every run of white space becomes one space, so a phrase survives line breaks;
- typographic quotes and dashes become their ASCII forms (``Japan’s`` → ``Japan's``);
- invisible format characters (soft hyphen, zero-width space) are dropped.

Every character of the normalised text remembers the span of the original it came from, so
that a hit found in normalised text is reported (and highlighted) in the original.

Word boundaries follow the script (DESIGN.md, "Rules"): a *word character* is a letter, digit
or combining mark of a script written with spaces between words. Han, kana, Hangul and the
South-East Asian scripts written without spaces (Thai, Lao, Khmer, Myanmar) are not word
characters, so ``GCAP`` stands alone in ``日英伊のGCAP計画`` but not in ``GCAPS``.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Any

from bot.rules import native

# Scripts written without spaces between words: a term ending in one of these characters
# matches as a substring on that side. Sorted, non-overlapping, inclusive ranges.
UNSPACED_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x3035),  # kana repeat marks
    (0x303B, 0x303C),  # 〻 〼
    (0x3040, 0x30FF),  # Hiragana, Katakana (with ー)
    (0x3130, 0x318F),  # Hangul compatibility Jamo
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA960, 0xA97F),  # Hangul Jamo extended A
    (0xAC00, 0xD7FF),  # Hangul syllables, Jamo extended B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana (NFKC maps these away; kept for raw checks)
    (0x1B000, 0x1B16F),  # Kana supplement and extensions
    (0x20000, 0x323AF),  # CJK extensions B–H
)
_UNSPACED_STARTS = tuple(lo for lo, _ in UNSPACED_RANGES)

# One-to-one folds applied after NFKC: typographic forms analysts never mean to distinguish.
_PUNCT_FOLD = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
        "\u2015": "-", "\u2212": "-",
    }
)


@lru_cache(maxsize=8192)
def is_unspaced(char: str) -> bool:
    """True for a character of a script written without spaces (Han, kana, Hangul, Thai…)."""
    code = ord(char)
    i = bisect_right(_UNSPACED_STARTS, code) - 1
    return i >= 0 and code <= UNSPACED_RANGES[i][1]


@lru_cache(maxsize=8192)
def is_word_char(char: str) -> bool:
    """A letter, digit or mark of a spaced script: what a Latin term must not touch."""
    if char.isascii():
        return char.isalnum()
    return unicodedata.category(char)[0] in "LNM" and not is_unspaced(char)


def has_unspaced(text: str) -> bool:
    return any(is_unspaced(c) for c in text)


@dataclass(frozen=True, slots=True)
class Normalized:
    """Normalised text; ``text[i]`` came from ``original[starts[i]:ends[i]]``.

    The offset map is stored sparsely, as pieces: a *linear* piece maps its characters one to
    one onto a run of the original (most text), an *explicit* piece lists a span per
    character (a collapsed run of white space, a ligature, a composed accent). Looking up a
    span is a bisection over the pieces.
    """

    original: str
    text: str
    piece_starts: tuple[int, ...] = field(repr=False)  # normalised index where each begins
    piece_origins: tuple[int, ...] = field(repr=False)  # original index (linear pieces)
    piece_spans: tuple[tuple[tuple[int, int], ...] | None, ...] = field(repr=False)
    wide: bool = False  # it has characters beyond the Basic Multilingual Plane

    def char_span(self, i: int) -> tuple[int, int]:
        """The span of the original that normalised character ``i`` came from."""
        k = bisect_right(self.piece_starts, i) - 1
        spans = self.piece_spans[k]
        if spans is None:
            o = self.piece_origins[k] + i - self.piece_starts[k]
            return o, o + 1
        return spans[i - self.piece_starts[k]]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Map the normalised span ``[start, end)`` (``end > start``) to the original text."""
        return self.char_span(start)[0], self.char_span(end - 1)[1]

    @property
    def starts(self) -> tuple[int, ...]:
        return tuple(self.char_span(i)[0] for i in range(len(self.text)))

    @property
    def ends(self) -> tuple[int, ...]:
        return tuple(self.char_span(i)[1] for i in range(len(self.text)))


class _Builder:
    """Collects normalised pieces and their offset map, merging adjacent linear pieces."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.starts: list[int] = []
        self.origins: list[int] = []
        self.spans: list[tuple[tuple[int, int], ...] | None] = []
        self.size = 0
        self._linear_end = -1  # original index where the open linear piece would continue

    def linear(self, text: str, origin: int) -> None:
        if not text:
            return
        if origin != self._linear_end:
            self.starts.append(self.size)
            self.origins.append(origin)
            self.spans.append(None)
        self.parts.append(text)
        self.size += len(text)
        self._linear_end = origin + len(text)

    def explicit(self, text: str, spans: list[tuple[int, int]]) -> None:
        if not text:
            return
        self.starts.append(self.size)
        self.origins.append(spans[0][0])
        self.spans.append(tuple(spans))
        self.parts.append(text)
        self.size += len(text)
        self._linear_end = -1

    def last_char(self) -> str:
        return self.parts[-1][-1] if self.parts else ""

    def widen_last(self, end: int) -> None:
        """The last character (a space) also stands for the original up to ``end``."""
        k = len(self.spans) - 1
        spans = self.spans[k]
        if spans is None:
            # Split the linear piece: its last character becomes explicit.
            o = self.origins[k] + self.size - 1 - self.starts[k]
            last = self.parts[-1]
            self.parts[-1] = last[:-1]
            self.size -= 1
            if self.size == self.starts[k]:
                del self.starts[k], self.origins[k], self.spans[k]
            self._linear_end = -1
            self.explicit(" ", [(o, end)])
        else:
            self.spans[k] = (*spans[:-1], (spans[-1][0], end))
            self._linear_end = -1

    def build(self, original: str, wide: bool = False) -> Normalized:
        return Normalized(original, "".join(self.parts), tuple(self.starts),
                          tuple(self.origins), tuple(self.spans), wide)


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _joins(chunk: str, nxt: str) -> bool:
    """Whether NFKC would combine ``nxt`` with the characters before it."""
    if nxt.isspace():
        return False
    if unicodedata.combining(nxt):
        return True
    folded = _nfkc(nxt)
    if folded and unicodedata.combining(folded[0]):
        # A compatibility form of a combining mark (half-width ﾞ/ﾟ): NFKC may also reorder
        # it with marks that follow, so it belongs to the chunk before it.
        return True
    return _nfkc(chunk + nxt) != _nfkc(chunk) + _nfkc(nxt)


def _fold_chunk(chunk: str, casefold: bool) -> str:
    out = _nfkc(chunk)
    if casefold:
        out = out.casefold()
    out = out.translate(_PUNCT_FOLD)
    return "".join(c for c in out if unicodedata.category(c) != "Cf")


def _slow_chunks(text: str, start: int, stop: int, casefold: bool, out: _Builder) -> None:
    """Normalise ``text[start:stop]`` character chunk by character chunk (a character plus
    whatever NFKC would merge into it, such as a combining accent or a half-width
    voiced-sound mark), so that each output character maps to the chunk it came from."""
    i = start
    while i < stop:
        c = text[i]
        if c.isspace():
            j = i + 1
            while j < stop and text[j].isspace():
                j += 1
            if out.last_char() == " ":
                out.widen_last(j)
            else:
                out.explicit(" ", [(i, j)])
            i = j
            continue
        j = i + 1
        while j < stop and _joins(text[i:j], text[j]):
            j += 1
        piece = _fold_chunk(text[i:j], casefold)
        chars: list[str] = []
        for ch in piece:
            if ch.isspace():
                # NFKC turns a few compatibility characters into spaces; keep one.
                if chars and chars[-1] == " ":
                    continue
                if not chars and out.last_char() == " ":
                    out.widen_last(j)
                    continue
                ch = " "
            chars.append(ch)
        out.explicit("".join(chars), [(i, j)] * len(chars))
        i = j


@dataclass(frozen=True, slots=True)
class _Tables:
    """Characters sorted by how normalisation treats them (computed once, on first use)."""

    simple: dict[str, str]  # one character folds to one other, case-preserving
    complex: frozenset[str]  # expands, vanishes or combines: the slow path
    special: re.Pattern[str]  # any simple or complex character, or white space but " "
    words: re.Pattern[str]  # runs of word characters (w), of unspaced script (u), astral (x)
    word_set: frozenset[str]  # the word characters of the BMP (what is_word_char says)
    # For WordIndex: runs beyond Latin-1 of word characters (w), of unspaced script (u), and
    # single astral characters (x); Latin-1 is classified by a byte table.
    wide_runs: re.Pattern[str]
    # For words_within: one word (a run of word characters, or up to two characters of an
    # unspaced run), and the characters of neither kind, as character classes.
    word_class: str
    unspaced_class: str


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    """Scan the Basic Multilingual Plane once (≈0.2 s): which characters NFKC, case folding
    or the punctuation folds change, and which may join the characters around them.

    *Simple* characters fold to exactly one character that case-folds to one (``（`` → ``(``,
    ``Ａ`` → ``A``, ``’`` → ``'``); *complex* ones expand, vanish or combine (``…``, ``ﬁ``,
    ``ß``, combining marks, half-width voiced marks, Hangul jamo) and take the slow path.
    Everything outside the BMP is treated as complex.
    """
    seconds: set[str] = set()
    for code in range(0x80, 0x10000):
        decomposition = unicodedata.decomposition(chr(code))
        if decomposition and not decomposition.startswith("<"):
            parts = decomposition.split()
            if len(parts) == 2:
                seconds.add(chr(int(parts[1], 16)))
    simple: dict[str, str] = {}
    complex_chars: set[str] = set()
    spaces: list[str] = []
    word_chars: list[str] = []
    for code in range(0x80, 0x10000):
        c = chr(code)
        if is_word_char(c):
            word_chars.append(c)
        if c.isspace():
            spaces.append(c)
            continue
        if 0xD800 <= code <= 0xDFFF:
            complex_chars.add(c)
            continue
        kept = _fold_chunk(c, False)
        folded = _fold_chunk(c, True)
        joiner = (
            unicodedata.combining(c) != 0
            or c in seconds
            or 0x1100 <= code <= 0x11FF
            or 0xA960 <= code <= 0xA97F
            or 0xD7B0 <= code <= 0xD7FF
            or (bool(kept) and unicodedata.combining(kept[0]) != 0)
        )
        if not joiner and kept == c and folded == c:
            continue
        if (not joiner and len(kept) == 1 and len(folded) == 1 and not kept.isspace()
                and kept.casefold() == folded):
            simple[c] = kept
        else:
            complex_chars.add(c)
    ascii_spaces = "".join(c for c in map(chr, range(0x80)) if c.isspace() and c != " ")
    special = re.compile(
        "[" + re.escape(ascii_spaces) + "".join(re.escape(c) for c in spaces)
        + "".join(re.escape(c) for c in sorted(complex_chars))
        + "".join(re.escape(c) for c in sorted(simple)) + "\U00010000-\U0010ffff]"
    )
    unspaced = "".join(
        f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in UNSPACED_RANGES if hi < 0x10000
    )
    word_class = "A-Za-z0-9" + "".join(re.escape(c) for c in word_chars)
    words = re.compile(
        f"(?P<w>[{word_class}]+)|(?P<u>[{unspaced}]+)|(?P<x>[\U00010000-\U0010ffff])"
    )
    wide_class = "".join(re.escape(c) for c in word_chars if c > "\xff")
    wide_runs = re.compile(
        f"(?P<w>[{wide_class}]+)|(?P<u>[{unspaced}]+)|(?P<x>[\U00010000-\U0010ffff])"
    )
    word_set = frozenset(word_chars) | frozenset(
        c for c in map(chr, range(0x80)) if c.isalnum())
    unspaced_all = "".join(
        f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in UNSPACED_RANGES)
    return _Tables(simple, frozenset(complex_chars), special, words, word_set, wide_runs,
                   word_class, unspaced_all)


def word_chars() -> frozenset[str]:
    """The word characters of the Basic Multilingual Plane, as a set: ``c in word_chars()``
    is :func:`is_word_char` for them, without a call (the engine's inner loop)."""
    return _tables().word_set


def _is_complex(c: str, tables: _Tables) -> bool:
    return c in tables.complex or ord(c) > 0xFFFF


def normalize(text: str, *, casefold: bool = True) -> Normalized:
    """NFKC (+ casefold), collapse white space, fold quotes/dashes; keep the offset map.

    Without case folding (what the engine asks for), text whose characters NFKC leaves
    alone or folds one to one goes through the compiled normaliser when it was built
    (bot/rules/_speedups.c); everything else, and the reference, is
    :func:`python_normalize`."""
    if not casefold:
        compiled = _compiled_normalizer()
        if compiled is not None:
            found: Normalized | None = compiled.normalize(text)
            if found is not None:
                return found
    return python_normalize(text, casefold=casefold)


@lru_cache(maxsize=1)
def _normalizer_tables() -> tuple[bytes, bytes, bytes]:
    """What the compiled normaliser needs to know of each BMP character: its kind (0 left
    alone, 1 white space but " ", 2 folds to one character, 3 anything else), for kind 2
    what it folds to, and its case folding when that is one character of the BMP."""
    tables = _tables()
    kinds = bytearray(65536)
    simple = bytearray(65536 * 4)
    lower = bytearray(65536 * 4)
    for code in range(65536):
        c = chr(code)
        folded = c.casefold()
        if len(folded) == 1 and folded <= "\uffff":
            lower[4 * code:4 * code + 4] = ord(folded).to_bytes(4, "little")
        if c.isspace() and c != " ":
            kinds[code] = 1
        elif c in tables.complex:
            kinds[code] = 3
        elif c in tables.simple:
            kinds[code] = 2
            simple[4 * code:4 * code + 4] = ord(tables.simple[c]).to_bytes(4, "little")
    return bytes(kinds), bytes(simple), bytes(lower)


def _compiled_normalizer() -> Any:
    compiled = native.compiled()
    if compiled is None:
        return None
    return _make_normalizer(compiled)


@lru_cache(maxsize=2)
def _make_normalizer(compiled: Any) -> Any:
    kinds, simple, lower = _normalizer_tables()
    return compiled.Normalizer(kinds, simple, lower, Normalized)


def _python_casefold(text: str) -> str:
    return text.lower() if text.isascii() else text.casefold()  # the same for ASCII, faster


def exact_normalizer(compiled: ModuleType | None) -> Callable[[str], Normalized]:
    """``normalize(text, casefold=False)`` with the compiled module the engine chose once
    (bot.rules.native.compiled(); None: in Python), for every field of every entry."""
    normalizer = _make_normalizer(compiled) if compiled is not None else None
    if normalizer is None:
        return lambda text: python_normalize(text, casefold=False)
    fast = normalizer.normalize

    def normalize_exact(text: str) -> Normalized:
        found: Normalized | None = fast(text)
        return found if found is not None else python_normalize(text, casefold=False)
    return normalize_exact


def _python_casefolded(normalized: Normalized) -> Normalized | None:
    text = _python_casefold(normalized.text)
    if len(text) != len(normalized.text):
        return None
    return Normalized(normalized.original, text, normalized.piece_starts,
                      normalized.piece_origins, normalized.piece_spans, normalized.wide)


def casefolder(compiled: ModuleType | None) -> Callable[[Normalized], Normalized | None]:
    """A function giving normalised text case-folded with the same offset map — or None when
    folding changes its length (``ß`` → ``ss``), and the text must be normalised again with
    ``casefold=True``; with the compiled module as :func:`exact_normalizer` takes it."""
    normalizer = _make_normalizer(compiled) if compiled is not None else None
    if normalizer is None:
        return _python_casefolded
    fast = normalizer.casefolded

    def casefolded(normalized: Normalized) -> Normalized | None:
        found: Normalized | None = fast(normalized)
        return found if found is not None else _python_casefolded(normalized)
    return casefolded


def python_normalize(text: str, *, casefold: bool = True) -> Normalized:
    """:func:`normalize` in Python: every case, and the reference for the compiled one.

    Most text is copied in runs and case-folded with ``str.casefold`` (C speed). One regular
    expression of a single character class finds what needs attention — white space other
    than a lone space, characters that fold to another one, and the few that expand or
    combine — and ``str.find`` finds double spaces; only those are handled one by one.
    """
    out = _Builder()
    tables = _tables()
    n = len(text)
    marks = [m.start() for m in tables.special.finditer(text)]
    double = text.find("  ")
    if double != -1:
        while double != -1:
            marks.append(double)
            double = text.find("  ", double + 2)
        marks.sort()
    pos = 0
    fold = str.lower if text.isascii() else str.casefold  # the same for ASCII, and faster

    def plain(stop: int) -> None:
        if stop > pos:
            chunk = text[pos:stop]
            out.linear(fold(chunk) if casefold else chunk, pos)

    for p in marks:
        if p < pos:
            continue
        c = text[p]
        if c.isspace():
            if p > pos and text[p - 1] == " ":
                p -= 1  # " \n": the space before belongs to the run
            end = p + 1
            while end < n and text[end].isspace():
                end += 1
            plain(p)
            if out.last_char() == " ":
                out.widen_last(end)
            elif end - p == 1:
                out.linear(" ", p)
            else:
                out.explicit(" ", [(p, end)])
            pos = end
            continue
        if c in tables.simple and not (p + 1 < n and _is_complex(text[p + 1], tables)):
            plain(p)
            mapped = tables.simple[c]
            out.linear(mapped.casefold() if casefold else mapped, p)
            pos = p + 1
            continue
        start = p - 1 if p > pos and not text[p - 1].isspace() else p
        end = p + 1
        while end < n and not text[end].isspace() and (
                text[end] in tables.simple or _is_complex(text[end], tables)):
            end += 1
        plain(start)
        _slow_chunks(text, start, end, casefold, out)
        pos = end
    plain(n)
    # Characters beyond the BMP are among the marks (NFKC never makes one from the BMP).
    return out.build(text, any(text[p] > "\uffff" for p in marks))


def normalize_term(text: str, *, casefold: bool = True) -> str:
    """A term as it is searched for: normalised like entry text, without outer spaces."""
    return normalize(text, casefold=casefold).text.strip(" ")


def word_numbers(text: str) -> tuple[int, ...]:
    """The ordinal of the word each character of ``text`` belongs to, for NEAR distances.

    A run of word characters is one word; in unspaced scripts every two characters count as
    one word (DESIGN.md: "a CJK run counts one word per 2 characters"). Spaces and
    punctuation take the number of the word before them.
    """
    numbers: list[int] = []
    current = -1
    in_word = False
    unspaced_run = 0
    for c in text:
        if is_word_char(c):
            if not in_word:
                current += 1
                in_word = True
            unspaced_run = 0
        elif is_unspaced(c):
            if unspaced_run % 2 == 0:
                current += 1
            unspaced_run += 1
            in_word = False
        else:
            in_word = False
            unspaced_run = 0
        numbers.append(max(current, 0))
    return tuple(numbers)


# For WordIndex: byte 1 for a Latin-1 word character, 0 otherwise (no Latin-1 character
# belongs to an unspaced script). Characters beyond Latin-1 arrive as "?" from the encoder
# and are classified by ``_Tables.wide_runs``.
_LATIN1_WORD = bytes(1 if is_word_char(chr(code)) else 0 for code in range(256))
_UNITS = (b"\x01\x00", b"\x00\x01")  # unit starts of an unspaced run, by offset parity
_QUESTION_RUN = re.compile(rb"\?+")


class WordIndex:
    """Word numbers (as :func:`word_numbers` gives them) at any position, counted on demand.

    Every character is a byte (the Latin-1 encoder and a byte table, at C speed, then the
    few runs beyond Latin-1 patched): 1 for a word character, 0 otherwise. Word starts are
    then ``w & ~(w << 8)`` on that array read as one integer (a word character after a
    non-word one), unspaced runs add a start every two characters, and a word number is a
    ``bytes.count`` of starts up to the position. Nothing is built per word: an entry needs
    numbers only where a NEAR compares two occurrences.
    """

    __slots__ = ("_starts",)

    def __init__(self, text: str) -> None:
        encoded = text.encode("latin-1", "replace")  # one byte per character, "?" beyond
        words = encoded.translate(_LATIN1_WORD)
        units = b""
        if not text.isascii():
            word_buf: bytearray | None = None
            unit_buf: bytearray | None = None
            wide = _tables().wide_runs
            run_start = u_end = -1  # the unspaced run being written, which astral characters
            q = encoded.find(b"?")  # (one match each) may continue
            while q != -1:
                stop = _QUESTION_RUN.match(encoded, q).end()  # type: ignore[union-attr]
                for m in wide.finditer(text, q, stop):
                    a, b = m.span()
                    kind = m.lastgroup
                    if kind == "x":
                        c = text[a]
                        kind = "w" if is_word_char(c) else "u" if is_unspaced(c) else ""
                    if kind == "w":
                        if word_buf is None:
                            word_buf = bytearray(words)
                        word_buf[a:b] = b"\x01" * (b - a)
                    elif kind == "u":
                        if unit_buf is None:
                            unit_buf = bytearray(len(words))
                        if a != u_end:
                            run_start = a
                        pair = _UNITS[(a - run_start) % 2]
                        unit_buf[a:b] = pair * ((b - a) // 2) + pair[: (b - a) % 2]
                        u_end = b
                q = encoded.find(b"?", stop)
            if word_buf is not None:
                words = bytes(word_buf)
            if unit_buf is not None:
                units = bytes(unit_buf)
        w = int.from_bytes(words, "little")
        starts = w & ~(w << 8)  # byte i is 1 where i is a word character and i - 1 is not
        if units:
            starts |= int.from_bytes(units, "little")
        self._starts = starts.to_bytes(len(words), "little")

    def number(self, pos: int) -> int:
        units = self._starts.count(1, 0, pos + 1)
        return units - 1 if units > 0 else 0

    def span(self, start: int, end: int) -> tuple[int, int]:
        """``(number(start), number(end - 1))`` for the span ``[start, end)``."""
        starts = self._starts
        units = starts.count(1, 0, start + 1)
        last = units + starts.count(1, start + 1, end)
        return (units - 1 if units > 0 else 0), (last - 1 if last > 0 else 0)


def units_between(text: str, x: int, y: int, limit: int) -> int:
    """How many words start in ``(x, y]`` — ``word_numbers(text)[y] - word_numbers(text)[x]``
    when a word starts at or before ``x`` — or ``limit + 1`` once there are more than
    ``limit``: NEAR needs to know only whether two occurrences are close, and reading the
    words between them stops as soon as they are not."""
    count = 0
    c = text[x]
    kind = "w" if is_word_char(c) else "u" if is_unspaced(c) else ""
    run_start = _unspaced_run_start(text, x) if kind == "u" else -1
    end = x + 1  # a run beginning here continues the one at x
    for m in _tables().words.finditer(text, x + 1, y + 1):
        a, b = m.span()
        found = m.lastgroup
        if found == "x":  # one astral character: classify it, it may continue a run
            c = text[a]
            found = "w" if is_word_char(c) else "u" if is_unspaced(c) else ""
            if not found:
                kind = ""
                continue
        continues = a == end and found == kind
        if found == "w":
            if not continues:
                count += 1
        else:
            if not continues:
                run_start = a
            first = a + (run_start - a) % 2  # unspaced text: a word every two characters
            if first < b:
                count += (b - 1 - first) // 2 + 1
        kind, end = found or "", b
        if count > limit:
            return limit + 1
    return count


def _unspaced_run_start(text: str, x: int) -> int:
    """Where the run of unspaced-script characters through ``x`` begins."""
    j = x
    while j > 0 and is_unspaced(text[j - 1]):
        j -= 1
    return j


@lru_cache(maxsize=64)
def _more_words(n: int) -> re.Pattern[str]:
    """Matches where ``n`` words follow (each after anything that is not a word)."""
    t = _tables()
    word, unspaced = t.word_class, t.unspaced_class
    # Possessive and atomic: backtracking must not split a word to find more of them.
    return re.compile(
        f"(?:[^{word}{unspaced}]*+(?:[{word}]++|(?>[{unspaced}]{{1,2}}))){{{n}}}")


def words_within(text: str, x: int, y: int, limit: int) -> bool:
    """Whether at most ``limit`` words start in ``(x, y]`` (see :func:`units_between`),
    for text without characters beyond the BMP: one regular expression that stops at the
    ``limit + 1``-th word, instead of a loop over them."""
    c = text[x]
    start = x + 1
    tables = _tables()
    if start <= y and c in tables.word_set and text[start] in tables.word_set:
        run = tables.words.match(text, start)  # the rest of the word through x
        assert run is not None
        start = run.end()
    elif (start <= y and is_unspaced(c) and is_unspaced(text[start])
          and (start - _unspaced_run_start(text, x)) % 2):  # x + 1 is a pair's second
        start += 1
    if start > y:
        return True
    return _more_words(limit + 1).match(text, start, y + 1) is None
