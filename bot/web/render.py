"""Feed text made safe for HTML: highlighted fields and snippets (every piece escaped, the
hits in ``<mark>``), times. Jinja2 filters of the console."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from markupsafe import Markup, escape

from bot.model import Entry, Hit
from bot.notify.snippet import make_snippet


def highlight(text: str, hits: Iterable[Hit], field: str) -> Markup:
    """``text`` escaped, with the hits in ``field`` marked; overlapping or out-of-range hits
    (a stale offset) are skipped, never trusted."""
    spans = sorted({(h.start, h.end) for h in hits
                    if h.field == field and 0 <= h.start < h.end <= len(text)})
    out: list[str] = []
    at = 0
    for start, end in spans:
        if start < at:
            continue
        out.append(str(escape(text[at:start])))
        out.append(f"<mark>{escape(text[start:end])}</mark>")
        at = end
    out.append(str(escape(text[at:])))
    return Markup("".join(out))


def snippet(entry: Entry, hits: Iterable[Hit]) -> Markup:
    """The text around the first hit (as in Slack and the digest), hits marked."""
    shown = make_snippet(entry, tuple(hits))
    if shown is None:
        return Markup("")
    parts = [f"<mark>{escape(text)}</mark>" if hit else str(escape(text))
             for text, hit in shown.parts]
    return Markup(("…" if shown.cut_before else "") + "".join(parts)
                  + ("…" if shown.cut_after else ""))


def when(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return value.strftime(fmt) + " UTC" if value else "—"
