"""``build_digest(...) -> Digest``: what a digest says, decided from values. Pure.

    matches of the period | rules the digest includes | drop the back catalogue
      | group by rule (most severe, then busiest, first) | newest first
      | fold cross-source duplicates ("also: nhk, japan-times") | cut to max_per_rule

Feed text stays as the feed wrote it here (made one line, control characters dropped);
each renderer escapes it for its own format. Links are kept only when they are http(s).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from bot.digest.config import DigestConfig
from bot.digest.schedule import Period
from bot.model import RuleStatus, Severity
from bot.notify.snippet import Snippet, clean_inline, make_snippet
from bot.rules import Rule, RuleSet
from bot.store.digests import FeedProblem, FirstMention, MatchedEntry

TITLE_MAX = 300
# Two titles this alike (difflib ratio, after normalising) are one story told twice.
SAME_TITLE_RATIO = 0.92
SAME_TITLE_WINDOW = timedelta(hours=72)  # as Slack alerts fold them (DESIGN.md, Delivery)
_DIGITS = re.compile(r"\d+")
_TRACKING_PARAMS = re.compile(r"^(utm_[a-z]+|fbclid|gclid|mc_[a-z]+|ref|cmpid)$", re.I)
_NOT_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    link: str | None


@dataclass(frozen=True, slots=True)
class DigestItem:
    """One line of a section: a story, with the other sources that carried it."""

    entry_id: int
    title: str
    link: str | None
    source: str
    when: datetime
    snippet: Snippet | None
    also: tuple[Source, ...] = ()
    first_mentions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Section:
    rule_id: str
    title: str
    severity: Severity
    experimental: bool
    items: tuple[DigestItem, ...]
    stories: int  # lines after folding, before the cut
    more: int  # stories not listed (max_per_rule)


@dataclass(frozen=True, slots=True)
class FirstMentionLine:
    member: str
    rule_title: str
    title: str
    link: str | None
    source: str
    when: datetime


@dataclass(frozen=True, slots=True)
class SourceCount:
    name: str
    items: int  # entries of this source in the digest
    seen: int  # entries first seen during the period


@dataclass(frozen=True, slots=True)
class Digest:
    name: str
    title: str
    timezone: str
    period: Period
    weekly: bool
    sections: tuple[Section, ...]
    first_mentions: tuple[FirstMentionLine, ...]
    sources: tuple[SourceCount, ...]
    failing: tuple[FeedProblem, ...]
    items: int  # distinct entries listed or counted in the sections

    @property
    def empty(self) -> bool:
        return not self.sections and not self.first_mentions

    @property
    def subject(self) -> str:
        """"UK–Japan security — week of 23 Nov: 14 items, 2 first mentions" (one line)."""
        counts = plural(self.items, "item") if self.items else "nothing matched"
        if self.first_mentions:
            counts += ", " + plural(len(self.first_mentions), "first mention")
        return clean_inline(f"{self.title} — {self.period_name}: {counts}").strip()

    @property
    def period_name(self) -> str:
        tz = ZoneInfo(self.timezone)
        start = self.period.start.astimezone(tz)
        if self.weekly:
            return f"week of {start.day} {start:%b}"
        end = self.period.end.astimezone(tz)
        if end - start <= timedelta(days=1):
            return f"{end.day} {end:%b}"
        return f"{start.day} {start:%b} – {end.day} {end:%b}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def safe_link(url: str | None) -> str | None:
    """The URL when it is an absolute http(s) URL with a host; None otherwise
    (``javascript:``, ``data:``, relative, or hiding control characters)."""
    if not url:
        return None
    url = url.strip()
    if any(unicodedata.category(ch) == "Cc" or ch.isspace() for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


def normalised_link(url: str | None) -> str | None:
    """A link's identity for folding: scheme, ``www.``, fragment, tracking parameters and a
    trailing slash do not make a different story."""
    link = safe_link(url)
    if link is None:
        return None
    parts = urlsplit(link)
    host = (parts.hostname or "").lower().removeprefix("www.")
    query = urlencode(sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                             if not _TRACKING_PARAMS.match(k)))
    return urlunsplit(("", host, parts.path.rstrip("/") or "/", query, ""))


def normalised_title(title: str) -> str:
    text = unicodedata.normalize("NFKC", title).casefold()
    return " ".join(_NOT_WORD.sub(" ", text).split())


def same_story(a: MatchedEntry, b: MatchedEntry) -> bool:
    """Same normalised link; or, from another source within 72 hours, a near-identical
    title with the same numbers in it ("Bill 12" and "Bill 13" are two stories)."""
    link_a, link_b = normalised_link(a.entry.link), normalised_link(b.entry.link)
    if link_a is not None and link_a == link_b:
        return True
    if a.feed_name == b.feed_name or abs(a.first_seen_at - b.first_seen_at) > SAME_TITLE_WINDOW:
        return False
    title_a, title_b = normalised_title(a.entry.title), normalised_title(b.entry.title)
    if not title_a or not title_b or _DIGITS.findall(title_a) != _DIGITS.findall(title_b):
        return False
    if title_a == title_b:
        return True
    matcher = difflib.SequenceMatcher(None, title_a, title_b, autojunk=False)
    return matcher.quick_ratio() >= SAME_TITLE_RATIO and matcher.ratio() >= SAME_TITLE_RATIO


def entry_time(m: MatchedEntry) -> datetime:
    return m.entry.published or m.entry.updated or m.first_seen_at


def is_back_catalogue(m: MatchedEntry, period: Period) -> bool:
    """An item dated well before the period (a new feed's archive, stored on its first
    poll) is not news of this period, even though it was matched during it."""
    dated = m.entry.published or m.entry.updated
    return dated is not None and dated < period.start - (period.end - period.start)


def fold(found: Sequence[MatchedEntry]) -> list[list[MatchedEntry]]:
    """Group one rule's matches into stories (same normalised link or near-identical
    title); each group's first item is the one seen first."""
    groups: list[list[MatchedEntry]] = []
    for m in sorted(found, key=lambda m: (m.first_seen_at, m.entry_id)):
        home = next((g for g in groups if any(same_story(m, other) for other in g)), None)
        if home is None:
            groups.append([m])
        else:
            home.append(m)
    return groups


def _snippet(m: MatchedEntry) -> Snippet | None:
    snippet = make_snippet(m.entry, m.hits, before=80, after=220)
    if snippet is not None and snippet.field == "title":
        # The title is shown anyway: show the start of the text instead.
        snippet = make_snippet(m.entry, (), before=0, after=300)
    return snippet


def _item(group: list[MatchedEntry], mentions: Mapping[int, tuple[str, ...]]) -> DigestItem:
    first = group[0]
    title = clean_inline(first.entry.title).strip() or "(untitled)"
    if len(title) > TITLE_MAX:
        title = title[: TITLE_MAX - 1].rstrip() + "…"
    others: dict[str, Source] = {}
    for m in group[1:]:
        if m.feed_name != first.feed_name:
            others.setdefault(m.feed_name, Source(m.feed_name, safe_link(m.entry.link)))
    named = tuple(dict.fromkeys(n for m in group for n in mentions.get(m.entry_id, ())))
    return DigestItem(
        entry_id=first.entry_id, title=title, link=safe_link(first.entry.link),
        source=first.feed_name, when=entry_time(first), snippet=_snippet(first),
        also=tuple(others.values()), first_mentions=named,
    )


def included_rules(config: DigestConfig, rules: RuleSet) -> dict[str, Rule]:
    return {r.id: r for r in rules.rules if config.includes(r)}


def build_digest(
    config: DigestConfig,
    rules: RuleSet,
    period: Period,
    found: Iterable[MatchedEntry],
    *,
    first_mentions: Iterable[FirstMention] = (),
    seen_per_source: Mapping[str, int] | None = None,
    failing: Iterable[FeedProblem] = (),
) -> Digest:
    """The digest of ``period`` from the store's rows for it."""
    wanted = included_rules(config, rules)
    by_rule: dict[str, list[MatchedEntry]] = {}
    for m in found:
        if m.rule_id in wanted and not is_back_catalogue(m, period):
            by_rule.setdefault(m.rule_id, []).append(m)
    mentions_in: dict[int, list[str]] = {}
    mention_lines: list[FirstMentionLine] = []
    for fm in first_mentions:
        rule = wanted.get(fm.rule_id)
        if rule is None:
            continue
        mentions_in.setdefault(fm.entry_id, []).append(fm.member)
        mention_lines.append(FirstMentionLine(
            member=clean_inline(fm.member).strip(), rule_title=rule.title,
            title=clean_inline(fm.title).strip()[:TITLE_MAX], link=safe_link(fm.link),
            source=fm.feed_name, when=fm.seen_at))
    mentions = {k: tuple(v) for k, v in mentions_in.items()}

    sections: list[Section] = []
    listed: set[int] = set()
    per_source: dict[str, set[int]] = {}
    for rule_id, rule_matches in by_rule.items():
        rule = wanted[rule_id]
        stories = fold(rule_matches)
        stories.sort(key=lambda g: (entry_time(g[0]), g[0].entry_id), reverse=True)
        shown = stories[: config.max_per_rule]
        for group in stories:
            listed.add(group[0].entry_id)
            for m in group:
                per_source.setdefault(m.feed_name, set()).add(m.entry_id)
        sections.append(Section(
            rule_id=rule.id, title=rule.title, severity=rule.severity,
            experimental=rule.status is RuleStatus.EXPERIMENTAL,
            items=tuple(_item(g, mentions) for g in shown), stories=len(stories),
            more=len(stories) - len(shown)))
    sections.sort(key=lambda s: (-s.severity.rank, -s.stories, s.rule_id))

    seen = dict(seen_per_source or {})
    names = sorted(set(seen) | set(per_source))
    sources = sorted(
        (SourceCount(n, len(per_source.get(n, ())), seen.get(n, 0)) for n in names),
        key=lambda s: (-s.items, -s.seen, s.name))
    return Digest(
        name=config.name, title=config.title, timezone=config.timezone, period=period,
        weekly=config.period == timedelta(days=7), sections=tuple(sections),
        first_mentions=tuple(mention_lines), sources=tuple(sources),
        failing=tuple(replace(f, error=clean_inline(f.error).strip()[:300]) for f in failing),
        items=len(listed),
    )
