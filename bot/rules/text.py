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
from dataclasses import dataclass, field
from functools import lru_cache

# Scripts written without spaces between words: a term ending in one of these characters
# matches as a substring on that side. Sorted, non-overlapping, inclusive ranges.
_UNSPACED_RANGES: tuple[tuple[int, int], ...] = (
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
_UNSPACED_STARTS = tuple(lo for lo, _ in _UNSPACED_RANGES)

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
    return i >= 0 and code <= _UNSPACED_RANGES[i][1]


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
    """Normalised text; ``text[i]`` came from ``original[starts[i]:ends[i]]``."""

    original: str
    text: str
    starts: tuple[int, ...] = field(repr=False)
    ends: tuple[int, ...] = field(repr=False)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Map the normalised span ``[start, end)`` (``end > start``) to the original text."""
        return self.starts[start], self.ends[end - 1]


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _joins(chunk: str, nxt: str) -> bool:
    """Whether NFKC would combine ``nxt`` with the characters before it."""
    if nxt.isspace():
        return False
    if unicodedata.combining(nxt):
        return True
    return _nfkc(chunk + nxt) != _nfkc(chunk) + _nfkc(nxt)


def _fold_chunk(chunk: str, casefold: bool) -> str:
    out = _nfkc(chunk)
    if casefold:
        out = out.casefold()
    out = out.translate(_PUNCT_FOLD)
    return "".join(c for c in out if unicodedata.category(c) != "Cf")


_ASCII_RUN = re.compile(r"[\x00-\x7f]+")
_SPACE_RUNS = re.compile(r"\s+")


def _ascii_segment(
    text: str, start: int, stop: int, casefold: bool,
    out: list[str], starts: list[int], ends: list[int],
) -> None:
    """Normalise ``text[start:stop]`` (all ASCII) into the output lists."""
    pos = start
    for space in _SPACE_RUNS.finditer(text, start, stop):
        a, b = space.span()
        if a > pos:
            piece = text[pos:a]
            out.append(piece.lower() if casefold else piece)
            starts.extend(range(pos, a))
            ends.extend(range(pos + 1, a + 1))
        out.append(" ")
        starts.append(a)
        ends.append(b)
        pos = b
    if stop > pos:
        piece = text[pos:stop]
        out.append(piece.lower() if casefold else piece)
        starts.extend(range(pos, stop))
        ends.extend(range(pos + 1, stop + 1))


def normalize(text: str, *, casefold: bool = True) -> Normalized:
    """NFKC (+ casefold), collapse white space, fold quotes/dashes; keep the offset map.

    Characters are normalised in small chunks (a character plus whatever NFKC would merge
    into it, such as a combining accent or a half-width voiced-sound mark), so that each
    output character maps to the chunk of input it came from.
    """
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c.isascii():
            # Fast path for a run of ASCII (most of an English entry): case-fold with
            # str.lower (the same for ASCII), collapse white space, map offsets 1:1. The
            # run's last character is left to the general path when a non-ASCII character
            # follows, because NFKC may combine the two (e + U+0301 → é).
            run = _ASCII_RUN.match(text, i)
            assert run is not None
            stop = run.end()
            if stop < n and not text[stop - 1].isspace():
                stop -= 1
            if stop > i:
                _ascii_segment(text, i, stop, casefold, out, starts, ends)
                i = stop
                continue
        if c.isspace():
            j = i + 1
            while j < n and text[j].isspace():
                j += 1
            if out and out[-1] == " " and ends[-1] == i:
                ends[-1] = j  # continues a run of spaces the ASCII path began
            else:
                out.append(" ")
                starts.append(i)
                ends.append(j)
            i = j
            continue
        j = i + 1
        if c.isascii() and (j >= n or text[j].isascii()):
            piece = c.casefold() if casefold else c
        else:
            while j < n and _joins(text[i:j], text[j]):
                j += 1
            piece = _fold_chunk(text[i:j], casefold)
        for ch in piece:
            if ch.isspace():
                # NFKC turns a few compatibility characters into spaces; keep one.
                if out and out[-1] == " ":
                    ends[-1] = j
                    continue
                ch = " "
            out.append(ch)
            starts.append(i)
            ends.append(j)
        i = j
    return Normalized(text, "".join(out), tuple(starts), tuple(ends))


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
