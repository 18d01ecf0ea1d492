"""Pure planning of what one poll posts: alerts, and the thread replies and updates that keep
a channel quiet (DESIGN.md, Delivery; issue 4). Values in, values out; ``now`` is a parameter.

    plan_outbox(candidates, routes, threads=…, previous=…, feed_name=…, now=…) -> OutboxPlan

- A new match is an alert, unless the same story is already alerted in that channel: the same
  link once tracking parameters and fragments are removed, or a near-identical title, within
  72 h. Then it is a thread reply ("also reported by …") under the first alert, and when the
  story's first confirmation by another site arrives, an update of the first alert.
- A changed entry that was already posted gets a thread reply saying what changed; a rule
  that matches only after the change still makes a new alert for that rule.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot.decide import PlannedAlert, RuleRoute, plan_alerts
from bot.messages import Change, Duplicate
from bot.model import AlertRule, Entry, Match

DUPLICATE_WINDOW = timedelta(hours=72)
TITLE_SIMILARITY = 0.9  # Jaccard of the titles' content words
# Short titles ("Press release", "防衛相会見") repeat across unrelated stories: below this
# weight (a CJK character counts two) a title never makes a duplicate on its own.
MIN_TITLE_WEIGHT = 20
MAX_CHANGE_REPLIES = 5  # per alert: a feed that rewrites an item on every fetch stays quiet
CHANGE_TEXT_MAX = 300

# Query parameters that say how a reader arrived, not which page it is.
TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "dclid", "gclsrc", "msclkid", "yclid", "igshid", "mc_cid", "mc_eid",
    "_ga", "_gl", "ocid", "cmpid", "ref_src", "s_cid", "wt.mc_id", "mkt_tok", "at_medium",
    "at_campaign", "rss", "cmp", "ito",
})
_POSTED = ("sending", "sent")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A new (``entry_id`` None) or changed entry of this poll that may alert."""

    entry: Entry
    entry_id: int | None
    matches: tuple[Match, ...]


@dataclass(frozen=True, slots=True)
class Report:
    """One message of a story already in a channel: its first alert, or a duplicate reply."""

    thread_id: int  # the top-level alert's row id
    channel: str
    feed_name: str
    link: str | None
    title: str
    at: datetime
    first: bool  # the top-level alert itself
    independent: bool = False  # a reply whose source confirmed the story


@dataclass(frozen=True, slots=True)
class PostedAlert:
    """A top-level alert of a changed entry, as the store holds it."""

    alert_id: int
    channel: str
    status: str
    change_replies: int = 0


@dataclass(frozen=True, slots=True)
class Previous:
    """A changed entry as it was stored before this poll, with its alerts."""

    entry: Entry
    rule_ids: tuple[str, ...]
    alerts: tuple[PostedAlert, ...] = ()


@dataclass(frozen=True, slots=True)
class PlannedReply:
    """A thread reply: under alert ``parent_id``, or under this poll's alert for
    ``parent_key`` (an entry key) when the first report is in the same batch."""

    entry_key: str
    channel: str
    parent_id: int | None
    parent_key: str | None
    rules: tuple[AlertRule, ...]
    duplicate: Duplicate | None = None
    change: Change | None = None
    change_of: str = ""  # the new content hash, so that one change is one reply


@dataclass(frozen=True, slots=True)
class PlannedUpdate:
    """Edit alert ``parent_id`` in place: ``sources`` feeds have now reported its story."""

    parent_id: int
    channel: str
    sources: int


@dataclass(frozen=True, slots=True)
class OutboxPlan:
    alerts: tuple[PlannedAlert, ...] = ()
    replies: tuple[PlannedReply, ...] = ()
    updates: tuple[PlannedUpdate, ...] = ()


# ------------------------------------------------------------------------ same story


@functools.lru_cache(maxsize=8192)  # a cycle files a link, then compares and files it again
def story_link(link: str | None) -> str | None:
    """The link as a story identity: no scheme, no ``www.``, no default port, no fragment,
    no tracking parameters (``utm_*``, ``fbclid``, ``gclid`` …), the rest of the query sorted,
    no trailing slash. None when there is no http(s) link."""
    if not link:
        return None
    try:
        parts = urlsplit(link.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    host = host.removeprefix("www.")
    if port is not None and port not in (80, 443):
        host += f":{port}"
    query = sorted(
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not (k.lower().startswith("utm_") or k.lower() in TRACKING_PARAMS)
    )
    path = parts.path.rstrip("/") or "/"
    return urlunsplit(("", host, path, urlencode(query), "")).removeprefix("//")


def _site(link: str | None) -> str | None:
    normal = story_link(link)
    return normal.split("/", 1)[0] if normal else None


# Words that an outlet adds or drops when it retypes a headline.
STOPWORDS = frozenset({
    "a", "an", "and", "the", "of", "to", "in", "on", "at", "for", "by", "with", "from", "as",
    "is", "are", "be", "its", "it", "this", "that",
})
_DIGITS = re.compile(r"\d+")


def _is_cjk(ch: str) -> bool:
    return ord(ch) >= 0x2E80


def _is_kana_particle(ch: str) -> bool:
    return 0x3040 <= ord(ch) <= 0x309F  # hiragana: particles and endings, not the subject


def title_words(title: str) -> list[str]:
    """A title's content words: NFKC, case-folded; Latin words without stop words, each
    kanji or katakana character a word of its own, hiragana and punctuation dropped."""
    text = unicodedata.normalize("NFKC", title).casefold()
    words: list[str] = []
    current: list[str] = []
    for ch in text + " ":
        if ch.isalnum() and not _is_cjk(ch):
            current.append(ch)
            continue
        if current:
            words.append("".join(current))
            current = []
        if _is_cjk(ch) and ch.isalnum() and not _is_kana_particle(ch):
            words.append(ch)
    return [w for w in words if w not in STOPWORDS]


def _weight(words: Iterable[str]) -> int:
    return sum(2 if _is_cjk(w[0]) else len(w) for w in words)


def similar_titles(a: str, b: str) -> bool:
    """Near-identical titles: long enough to be specific, the same numbers (so "briefing,
    25 November" is not "briefing, 26 November"), and the same content words but for one
    in ten (Jaccard ≥ 0.9): "sign the GCAP treaty" is "sign GCAP treaty", but "office in
    Rome" is not "office in Tokyo"."""
    wa, wb = title_words(a), title_words(b)
    if min(_weight(wa), _weight(wb)) < MIN_TITLE_WEIGHT:
        return False
    if [w for w in wa if _DIGITS.fullmatch(w)] != [w for w in wb if _DIGITS.fullmatch(w)]:
        return False
    sa, sb = set(wa), set(wb)
    return len(sa & sb) / len(sa | sb) >= TITLE_SIMILARITY


def same_story(entry: Entry, report: Report, now: datetime) -> str | None:
    """``"link"`` or ``"title"`` when ``entry`` is the story of ``report``, else None."""
    if now - report.at > DUPLICATE_WINDOW:
        return None
    link = story_link(entry.link)
    if link is not None and link == story_link(report.link):
        return "link"
    if similar_titles(entry.title, report.title):
        return "title"
    return None


# ------------------------------------------------------------------------ what changed

_TOKEN = re.compile(r"[0-9A-Za-zÀ-ɏ'’]+(?:[-.][0-9A-Za-zÀ-ɏ]+)*|\S")


def _spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _TOKEN.finditer(text)]


def _runs(old: str, new: str) -> tuple[list[str], list[str]]:
    """Word runs removed from ``old`` and added in ``new`` (a CJK character is a word)."""
    a, b = _spans(old), _spans(new)
    matcher = difflib.SequenceMatcher(
        None, [old[s:e] for s, e in a], [new[s:e] for s, e in b], autojunk=False)
    removed: list[str] = []
    added: list[str] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op in ("replace", "delete"):
            removed.append(old[a[i1][0]:a[i2 - 1][1]])
        if op in ("replace", "insert"):
            added.append(new[b[j1][0]:b[j2 - 1][1]])
    return removed, added


def _short(runs: Sequence[str]) -> str:
    text = " … ".join(" ".join(r.split()) for r in runs)
    return text if len(text) <= CHANGE_TEXT_MAX else text[: CHANGE_TEXT_MAX - 1].rstrip() + "…"


def describe_change(old: Entry, new: Entry) -> Change:
    """What a reader would notice: title words removed and added, and a short diff of the
    summary (else of the content). Whitespace-only edits are no change."""
    title_removed, title_added = _runs(old.title, new.title)
    text_field: str | None = None
    removed: list[str] = []
    added: list[str] = []
    for name in ("summary", "content"):
        before, after = getattr(old, name), getattr(new, name)
        if before.split() != after.split():
            text_field = name
            removed, added = _runs(before, after)
            break
    return Change(
        title_removed=tuple(title_removed), title_added=tuple(title_added),
        text_field=text_field if (removed or added) else None,
        text_removed=_short(removed), text_added=_short(added),
        link_changed=story_link(old.link) != story_link(new.link),
    )


# ------------------------------------------------------------------------ the plan


@dataclass(slots=True)
class _Thread:
    """A story in a channel while planning: its first alert and who has reported it.

    ``order`` is the thread's place among its channel's threads (oldest first alert first):
    when an entry matches several stories, the earliest one wins, as it always has."""

    alert_id: int | None
    entry_key: str | None
    reports: list[Report] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # first feed, then independent ones
    order: int = 0

    @property
    def first(self) -> Report:
        return self.reports[0]


@functools.lru_cache(maxsize=8192)
def _title_keys(title: str) -> tuple[tuple[tuple[str, ...], str], ...]:
    """Index keys under which a title's near-identical twins are filed: (its numbers, one of
    its first content words in a fixed order). Two titles that ``similar_titles`` calls the
    same have the same numbers and share a word among those first words (the prefix filter
    of set-similarity joins: with Jaccard ≥ t, the first ``n - ⌈t·n⌉ + 1`` words of each
    set in any fixed order intersect). Short titles, which never match, get no key. Cached:
    a cycle files a title, then reads it back from the store."""
    words = title_words(title)
    if _weight(words) < MIN_TITLE_WEIGHT:
        return ()
    digits = tuple(w for w in words if _DIGITS.fullmatch(w))
    distinct = sorted(set(words))
    # floor ≤ ceil: one word longer than the tight bound, never shorter (float rounding).
    prefix = len(distinct) - math.floor(TITLE_SIMILARITY * len(distinct)) + 1
    return tuple((digits, word) for word in distinct[:prefix])


class StoryIndex:
    """The stories already in each channel (first alerts and their duplicate replies), found
    by link and by title without comparing an entry with every report.

    A poll cycle builds one from the store's recent reports and adds (:meth:`add`) what later
    polls wrote, so that planning a poll costs what its own entries cost, not what the
    channel holds (issue 7: comparing every entry with every report was quadratic in the
    cycle). :func:`plan_outbox` never changes an index it is given.
    """

    def __init__(self, reports: Iterable[Report] = ()) -> None:
        self._by_id: dict[int, _Thread] = {}
        self._count: dict[str, int] = {}
        # Keyed by the hash of (channel, link) and of (channel, numbers, word), and holding
        # one thread or a list of them: a cycle files tens of thousands of reports, many
        # under keys of their own, and these two dicts were most of the poller's memory
        # (issue 7, peak RSS). A collision only adds a candidate, which same_story checks.
        self._links: dict[int, _Thread | list[_Thread]] = {}
        self._titles: dict[int, _Thread | list[_Thread]] = {}
        self.add(reports)

    def add(self, reports: Iterable[Report]) -> None:
        """File more reports: first alerts open threads; a reply joins its thread (or is
        dropped when its first alert is older than the window, as it always was)."""
        for report in sorted(reports, key=lambda r: (not r.first, r.at)):
            thread = self._by_id.get(report.thread_id)
            if thread is None:
                if not report.first:
                    continue
                thread = self._open(report.channel, report.thread_id, None)
                thread.sources.append(report.feed_name)
                self._by_id[report.thread_id] = thread
            self._file(thread, report)
            if report.independent and report.feed_name not in thread.sources:
                thread.sources.append(report.feed_name)

    def _open(self, channel: str, alert_id: int | None, entry_key: str | None) -> _Thread:
        order = self._count.get(channel, 0)
        self._count[channel] = order + 1
        return _Thread(alert_id, entry_key, order=order)

    def _file(self, thread: _Thread, report: Report) -> None:
        thread.reports.append(report)
        link = story_link(report.link)
        if link is not None:
            _file_under(self._links, hash((report.channel, link)), thread)
        for digits, word in _title_keys(report.title):
            _file_under(self._titles, hash((report.channel, digits, word)), thread)

    def candidates(self, channel: str, link: str | None,
                   title_keys: Sequence[tuple[tuple[str, ...], str]]) -> list[_Thread]:
        """The threads that may hold the story (a superset), oldest first."""
        found: dict[int, _Thread] = {}
        if link is not None:
            for thread in _filed_under(self._links, hash((channel, link))):
                found[thread.order] = thread
        for digits, word in title_keys:
            for thread in _filed_under(self._titles, hash((channel, digits, word))):
                found[thread.order] = thread
        return [found[k] for k in sorted(found)]


def _file_under(index: dict[int, _Thread | list[_Thread]], key: int, thread: _Thread) -> None:
    found = index.get(key)
    if found is None:
        index[key] = thread
    elif isinstance(found, list):
        found.append(thread)
    else:
        index[key] = [found, thread]


def _filed_under(index: dict[int, _Thread | list[_Thread]], key: int) -> Sequence[_Thread]:
    found = index.get(key)
    if found is None:
        return ()
    return found if isinstance(found, list) else (found,)


class _Planning:
    """One poll's view of the stories: the given index, and what this poll adds to it
    (new threads and new reports), kept apart so that the index is never changed."""

    def __init__(self, base: StoryIndex) -> None:
        self._base = base
        self._local = StoryIndex()
        self._local._count = dict(base._count)  # new threads come after the old ones
        self._copies: dict[tuple[str, int], _Thread] = {}

    def find(self, channel: str, entry: Entry, now: datetime) -> tuple[_Thread, str] | None:
        """The thread whose story this entry is, preferring a same-link match."""
        link, keys = story_link(entry.link), _title_keys(entry.title)
        found: dict[int, _Thread] = {}
        for thread in self._base.candidates(channel, link, keys):
            found[thread.order] = self._copies.get((channel, thread.order), thread)
        for thread in self._local.candidates(channel, link, keys):
            found[thread.order] = thread
        best: tuple[_Thread, str] | None = None
        for order in sorted(found):
            thread = found[order]
            for report in thread.reports:
                reason = same_story(entry, report, now)
                if reason == "link":
                    return thread, reason
                if reason is not None and best is None:
                    best = thread, reason
        return best

    def open(self, channel: str, entry_key: str, report: Report, feed_name: str) -> None:
        thread = self._local._open(channel, None, entry_key)
        thread.sources.append(feed_name)
        self._local._file(thread, report)

    def report(self, thread: _Thread, report: Report) -> _Thread:
        """Add a duplicate's report to ``thread`` (a copy, when the thread is the index's);
        returns the thread that holds it now."""
        key = (report.channel, thread.order)
        if thread.alert_id is not None and key not in self._copies:
            thread = _Thread(thread.alert_id, thread.entry_key, list(thread.reports),
                             list(thread.sources), thread.order)
            self._copies[key] = thread
        self._local._file(thread, report)
        return thread


def _independent(thread: _Thread, feed_name: str, link: str | None) -> bool:
    """Another feed on another site: a second publisher, not the same page syndicated."""
    first = thread.first
    if feed_name == first.feed_name:
        return False
    mine, theirs = _site(link), _site(first.link)
    return mine is None or theirs is None or mine != theirs


def plan_outbox(
    candidates: Sequence[Candidate],
    routes: Mapping[str, RuleRoute],
    *,
    threads: Iterable[Report] | StoryIndex = (),
    previous: Mapping[int, Previous] | None = None,
    feed_name: str,
    now: datetime,
) -> OutboxPlan:
    """Alerts, replies and updates for one poll of ``feed_name``.

    ``threads`` are the reports already in the channels (first alerts and duplicate replies
    of the last 72 h), or a :class:`StoryIndex` of them (left unchanged); ``previous`` the
    stored state of each changed entry.
    """
    previous = previous or {}
    stories = _Planning(threads if isinstance(threads, StoryIndex) else StoryIndex(threads))
    alerts: list[PlannedAlert] = []
    replies: list[PlannedReply] = []
    updates: list[PlannedUpdate] = []
    for cand in candidates:
        prev = previous.get(cand.entry_id) if cand.entry_id is not None else None
        if prev is not None:
            change = describe_change(prev.entry, cand.entry)
            for posted in prev.alerts:
                if (posted.status in _POSTED and not change.empty
                        and posted.change_replies < MAX_CHANGE_REPLIES):
                    replies.append(PlannedReply(
                        cand.entry.key, posted.channel, posted.alert_id, None, (),
                        change=change, change_of=cand.entry.content_hash))
        already = prev.rule_ids if prev is not None else ()
        for plan in plan_alerts(cand.entry, cand.matches, routes, already=already):
            if prev is not None and any(p.channel == plan.channel for p in prev.alerts):
                alerts.append(plan)  # a rule that matches only after the change
                continue
            found = stories.find(plan.channel, cand.entry, now)
            if found is None:
                alerts.append(plan)
                stories.open(plan.channel, cand.entry.key, Report(
                    0, plan.channel, feed_name, cand.entry.link, cand.entry.title, now, True),
                    feed_name)
                continue
            thread, reason = found
            independent = _independent(thread, feed_name, cand.entry.link)
            replies.append(PlannedReply(
                cand.entry.key, plan.channel, thread.alert_id, thread.entry_key, plan.rules,
                duplicate=Duplicate(reason, independent, thread.first.feed_name)))
            thread = stories.report(thread, Report(
                thread.alert_id or 0, plan.channel, feed_name, cand.entry.link,
                cand.entry.title, now, False, independent))
            if independent and feed_name not in thread.sources:
                thread.sources.append(feed_name)
                if thread.alert_id is not None:
                    updates.append(PlannedUpdate(thread.alert_id, plan.channel,
                                                 len(thread.sources)))
    return OutboxPlan(tuple(alerts), tuple(replies), tuple(updates))


