"""Pure text shaping shared by every sink: user-perceived characters, clean one-line text,
and the snippet around the first hit with the matched words marked.

Nothing here knows about Slack or Rich; each sink escapes the pieces in its own way.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from bot.model import Entry, Hit, field_text

TEXT_FIELDS = ("title", "summary", "content")
_FIELD_ORDER = {name: i for i, name in enumerate(TEXT_FIELDS)}

_ZWJ = "\u200d"
_WHITESPACE_RUN = re.compile(r"\s+")
# Bidirectional overrides and isolates: feed text could use them to make an alert read
# differently from what it says ("Trojan Source", CVE-2021-42574).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _extends_cluster(ch: str) -> bool:
    """True if ``ch`` belongs to the character before it (a rough UAX #29 "Extend")."""
    cp = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or ch == _ZWJ
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors (text/emoji presentation)
        or 0xE0100 <= cp <= 0xE01EF
        or 0x1F3FB <= cp <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences (subdivision flags)
    )


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def clusters(text: str) -> list[str]:
    """Split ``text`` into user-perceived characters, close enough to grapheme clusters
    that a cut between two of them never splits a combining accent, an emoji ZWJ sequence,
    a skin tone, a keycap or a flag."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        if _is_regional_indicator(text[i]) and j < n and _is_regional_indicator(text[j]):
            j += 1
        while j < n and _extends_cluster(text[j]):
            # A zero-width joiner glues the next character on as well (👩‍💻).
            j += 2 if text[j] == _ZWJ and j + 1 < n else 1
        out.append(text[i:j])
        i = j
    return out


def is_boundary(text: str, i: int) -> bool:
    """True if a cut at ``text[:i] | text[i:]`` falls between two clusters."""
    if i <= 0 or i >= len(text):
        return True
    if _extends_cluster(text[i]) or text[i - 1] == _ZWJ:
        return False
    return not (_is_regional_indicator(text[i]) and _is_regional_indicator(text[i - 1]))


def clean_inline(text: str) -> str:
    """One line of displayable text: control and bidi-override characters dropped, runs of
    whitespace (newlines included) made one space. Leading/trailing space is kept, so that
    pieces of a split text can be cleaned one by one and joined."""
    kept = "".join(
        ch
        for ch in text
        if ch.isspace() or (unicodedata.category(ch) != "Cc" and ch not in _BIDI_CONTROLS)
    )
    return _WHITESPACE_RUN.sub(" ", kept)


@dataclass(frozen=True, slots=True)
class Snippet:
    """A window of one entry field: ``parts`` alternate plain text and hits (``True``).

    ``cut_before``/``cut_after`` say whether the field goes on beyond the window, so that a
    sink can show an ellipsis.
    """

    field: str
    parts: tuple[tuple[str, bool], ...]
    cut_before: bool
    cut_after: bool

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.parts)


def _valid_hits(entry: Entry, hits: Iterable[Hit]) -> list[Hit]:
    return [
        h
        for h in hits
        if h.field in _FIELD_ORDER and 0 <= h.start < h.end <= len(field_text(entry, h.field))
    ]


def make_snippet(
    entry: Entry,
    hits: Iterable[Hit],
    *,
    before: int = 120,
    after: int = 240,
    max_hit: int = 200,
) -> Snippet | None:
    """The text around the first hit, hits inside the window marked.

    The first hit in the summary or content is preferred (the title is shown anyway);
    a hit only in the title gives a window of the title. Without any usable hit the snippet is
    the start of the summary (else the content), unmarked. None if the entry has no text.
    Offsets that do not fit the field (a stale or buggy hit) are ignored, not trusted.
    """
    valid = _valid_hits(entry, hits)
    pool = [h for h in valid if h.field != "title"] or valid
    if pool:
        anchor = min(pool, key=lambda h: (_FIELD_ORDER[h.field], h.start, h.end))
        field = anchor.field
        text = field_text(entry, field)
        anchor_start, anchor_end = anchor.start, min(anchor.end, anchor.start + max_hit)
    else:
        field = next((f for f in ("summary", "content") if field_text(entry, f).strip()), "")
        if not field:
            return None
        text = field_text(entry, field)
        anchor_start = anchor_end = 0

    start = max(0, anchor_start - before)
    end = min(len(text), anchor_end + after)
    # Start and end on a word boundary when one is near, else on a character boundary
    # (CJK text has no spaces to cut at).
    if start > 0:
        space = _WHITESPACE_RUN.search(text, start, min(start + 25, anchor_start))
        if space:
            start = space.end()
    if end < len(text):
        tail = text.rfind(" ", max(end - 25, anchor_end), end)
        if tail > 0:
            end = tail
    while not is_boundary(text, start):
        start -= 1
    while not is_boundary(text, end):
        end += 1

    spans = sorted(
        (max(h.start, start), min(h.end, end, h.start + max_hit)) for h in valid if h.field == field
    )
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if s >= e:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))

    raw: list[tuple[str, bool]] = []
    pos = start
    for s, e in merged:
        raw.append((text[pos:s], False))
        raw.append((text[s:e], True))
        pos = e
    raw.append((text[pos:end], False))

    parts: list[tuple[str, bool]] = []
    for piece, is_hit in raw:
        piece = clean_inline(piece)
        if is_hit:
            # Whitespace inside the markers would stop Slack rendering the bold.
            stripped = piece.strip()
            if piece[: len(piece) - len(piece.lstrip())]:
                parts.append((" ", False))
            if stripped:
                parts.append((stripped, True))
            if piece[len(piece.rstrip()) :]:
                parts.append((" ", False))
        elif piece:
            parts.append((piece, False))
    # Join neighbouring plain pieces, trim the window's ends.
    joined: list[tuple[str, bool]] = []
    for piece, is_hit in parts:
        if joined and not is_hit and not joined[-1][1]:
            joined[-1] = (_WHITESPACE_RUN.sub(" ", joined[-1][0] + piece), False)
        else:
            joined.append((piece, is_hit))
    if joined and not joined[0][1]:
        joined[0] = (joined[0][0].lstrip(), False)
    if joined and not joined[-1][1]:
        joined[-1] = (joined[-1][0].rstrip(), False)
    final = tuple(p for p in joined if p[0])
    if not final:
        return None
    return Snippet(
        field=field,
        parts=final,
        cut_before=bool(text[:start].strip()),
        cut_after=bool(text[end:].strip()),
    )
