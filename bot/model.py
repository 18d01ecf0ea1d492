"""Immutable core values shared by every stage. No I/O here, no SQLAlchemy.

Datetimes are timezone-aware UTC throughout; they are converted only for display.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class RuleStatus(StrEnum):
    EXPERIMENTAL = "experimental"  # digest only, never Slack
    TEST = "test"
    STABLE = "stable"
    DEPRECATED = "deprecated"


@dataclass(frozen=True, slots=True)
class FeedSource:
    """One feed as declared in ``rules/feeds.yaml``."""

    name: str
    url: str
    interval: timedelta = timedelta(minutes=30)
    tags: tuple[str, ...] = ()
    language: str | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Entry:
    """One feed item, normalised. Text fields are plain text (HTML stripped, entities decoded).

    ``key`` is stable across fetches: the guid, else the normalised link, else a hash of
    title and date. ``content_hash`` covers only what a reader sees (title, link, summary,
    content), not fields that change on every fetch.
    """

    key: str
    title: str
    link: str | None = None
    author: str | None = None
    categories: tuple[str, ...] = ()
    summary: str = ""
    content: str = ""
    published: datetime | None = None
    updated: datetime | None = None
    language: str | None = None
    content_hash: str = ""


def field_text(entry: Entry, field: str) -> str:
    """The original text of ``field``; Hit offsets index into this string.

    ``category`` is the entry's categories joined by newlines.
    """
    if field == "title":
        return entry.title
    if field == "summary":
        return entry.summary
    if field == "content":
        return entry.content
    if field == "author":
        return entry.author or ""
    if field == "category":
        return "\n".join(entry.categories)
    if field == "link":
        return entry.link or ""
    raise ValueError(f"not a text field: {field}")


@dataclass(frozen=True, slots=True)
class Hit:
    """A term occurrence: ``entry.<field>[start:end]`` in the original (not normalised) text."""

    field: str
    start: int
    end: int
    term: str


@dataclass(frozen=True, slots=True)
class Match:
    """A rule matched an entry; ``hits`` say why (for highlights and ``explain``)."""

    rule_id: str
    rule_version: str
    hits: tuple[Hit, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one GET returned. ``body`` is None for 304 Not Modified.

    ``url`` is the final URL after redirects; ``permanent_url`` is where the redirects that
    began the chain were permanent (301/308) to, or None (no redirect, or a 302/307 first).
    """

    url: str
    status: int
    body: bytes | None
    headers: Mapping[str, str] = field(default_factory=dict)
    permanent_url: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("last-modified")


@dataclass(frozen=True, slots=True)
class AlertRule:
    """The part of a rule that an alert names."""

    id: str
    title: str
    severity: Severity
    version: str


@dataclass(frozen=True, slots=True)
class Alert:
    """One message to deliver: an entry in one channel, naming every rule that matched there."""

    id: int
    channel: str
    feed_name: str
    entry: Entry
    rules: tuple[AlertRule, ...]
    hits: tuple[Hit, ...] = ()
    created_at: datetime | None = None
    first_mentions: tuple[str, ...] = ()  # tracked list members this entry names first

    @property
    def severity(self) -> Severity:
        return max((r.severity for r in self.rules), key=lambda s: s.rank, default=Severity.MEDIUM)
