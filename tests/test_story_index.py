"""bot.plan.StoryIndex: finding an entry's story without comparing it with every report.

The index must never miss a story that ``same_story`` would find (it returns a superset,
which ``plan_outbox`` then checks), and planning from an index must give the same plan as
planning from the list of reports, however many polls have added to it.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import ROOT, FakeClock
from feedserver import FeedServer, Item, rss
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.app import open_app
from bot.config import Settings
from bot.decide import RuleRoute
from bot.model import AlertRule, Entry, Match, Severity
from bot.plan import (
    DUPLICATE_WINDOW,
    Candidate,
    Report,
    StoryIndex,
    _title_keys,
    plan_outbox,
    same_story,
    story_link,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WORDS = ["Japan", "UK", "GCAP", "treaty", "signs", "the", "radar", "Philippines", "OSA",
         "防衛", "大臣", "Tokyo", "Rome", "2026", "25", "fighter", "deal", "new"]
LINKS = [None, "https://gov.uk/gcap", "https://www.gov.uk/gcap/?utm_source=x",
         "http://gov.uk/gcap#top", "https://nhk.or.jp/a", "https://mod.go.jp/a?id=1"]

titles = st.lists(st.sampled_from(WORDS), min_size=1, max_size=9).map(" ".join)
links = st.sampled_from(LINKS)


def entry(key: str, title: str, link: str | None) -> Entry:
    return Entry(key=key, title=title, link=link, author=None, categories=(), summary="",
                 content="", published=NOW, updated=None, language="en", content_hash=key)


VOCAB = [f"word{i}" for i in range(40)] + ["防", "衛", "省", "2026", "25"]


@st.composite
def near_twins(draw: st.DrawFn) -> tuple[str, str]:
    """A title of 10–14 distinct words and a retyped one: a word added or dropped (Jaccard
    just above 0.9, so still the same story), letters re-cased."""
    words = draw(st.lists(st.sampled_from(VOCAB), min_size=10, max_size=14, unique=True))
    twin = list(words)
    latin = [i for i, w in enumerate(words) if w.startswith("word")]
    if draw(st.booleans()):  # the same numbers: a title with other numbers is another story
        twin.pop(draw(st.sampled_from(latin)))
    else:
        twin.append(draw(st.sampled_from([w for w in VOCAB if w.startswith("word")
                                          and w not in words])))
    return " ".join(words), " ".join(w.upper() if draw(st.booleans()) else w for w in twin)


@settings(max_examples=300, deadline=None)
@given(reports=st.lists(st.tuples(titles, links), max_size=12), title=titles, link=links,
       twins=st.lists(near_twins(), max_size=3))
def test_the_index_never_misses_a_story_that_same_story_finds(
    reports: list[tuple[str, str | None]], title: str, link: str | None,
    twins: list[tuple[str, str]],
) -> None:
    everything = reports + [(a, None) for a, _ in twins]
    stored = [Report(i + 1, "#c", "feed", r_link, r_title, NOW - timedelta(hours=1), True)
              for i, (r_title, r_link) in enumerate(everything)]
    index = StoryIndex(stored)
    for probe_title, probe_link in [(title, link), *((b, None) for _, b in twins)]:
        found = {t.alert_id for t in index.candidates(
            "#c", story_link(probe_link), _title_keys(probe_title))}
        probe = entry("k", probe_title, probe_link)
        expected = {r.thread_id for r in stored if same_story(probe, r, NOW) is not None}
        assert expected <= found
    for original, retyped in twins:  # the strategy makes real twins
        assert same_story(entry("k", retyped, None),
                          Report(1, "#c", "f", None, original, NOW, True), NOW) == "title"


RULE = AlertRule("gcap", "GCAP", Severity.HIGH, "v1")
ROUTES = {"gcap": RuleRoute(RULE, "stable", ("#c",))}


@settings(max_examples=100, deadline=None)
@given(polls=st.lists(st.lists(st.tuples(titles, links), min_size=1, max_size=4),
                      min_size=1, max_size=4))
def test_planning_from_an_index_equals_planning_from_the_reports(
    polls: list[list[tuple[str, str | None]]],
) -> None:
    """Poll after poll, the alerts written so far become reports: an index that is added to
    gives the same plan as the whole list read afresh, and planning leaves it unchanged."""
    reports: list[Report] = []
    index = StoryIndex()
    next_id = 1
    for n, poll in enumerate(polls):
        feed = f"feed-{n % 2}"
        candidates = [Candidate(entry(f"{n}-{i}", t, link), None, (Match("gcap", "v1", ()),))
                      for i, (t, link) in enumerate(poll)]
        from_list = plan_outbox(candidates, ROUTES, threads=reports, feed_name=feed, now=NOW)
        from_index = plan_outbox(candidates, ROUTES, threads=index, feed_name=feed, now=NOW)
        assert from_index == from_list
        assert plan_outbox(candidates, ROUTES, threads=index, feed_name=feed,
                           now=NOW) == from_list  # the index was not changed by planning
        # What the store would hold after this poll: its alerts, and its duplicate replies.
        by_key = {c.entry.key: c.entry for c in candidates}
        written: list[Report] = []
        ids: dict[str, int] = {}
        for alert in from_list.alerts:
            ids[alert.entry_key] = next_id
            e = by_key[alert.entry_key]
            written.append(Report(next_id, "#c", feed, e.link, e.title, NOW, True))
            next_id += 1
        for reply in from_list.replies:
            parent = reply.parent_id if reply.parent_id is not None else ids[reply.parent_key or ""]
            e = by_key[reply.entry_key]
            independent = reply.duplicate is not None and reply.duplicate.independent
            written.append(Report(parent, "#c", feed, e.link, e.title, NOW, False, independent))
            next_id += 1
        reports += written
        index.add(written)


def _view(index: StoryIndex) -> dict[int, tuple[object, ...]]:
    return {tid: (tuple(thread.sources),
                  tuple((r.channel, r.feed_name, r.link, r.title, r.at, r.first, r.independent)
                        for r in thread.reports))
            for tid, thread in index._by_id.items()}


def test_a_cycle_files_its_own_reports_as_reading_them_back_would(
    tmp_path: Path, feed_server: FeedServer, clock: FakeClock,
) -> None:
    """On SQLite the poller files each poll's alerts and duplicate replies in its story index
    instead of reading them back (issue 7): the index ends the cycle as a fresh read of the
    store would build it."""
    when = clock() - timedelta(hours=1)
    stories = {"a": "https://a.example/gcap", "b": "https://b.example/gcap-treaty",
               "c": "https://www.a.example/gcap?utm_source=x"}
    lines = ["feeds:"]
    for name, link in stories.items():
        feed_server.serve(f"/{name}.xml", rss([Item(
            title="UK, Japan and Italy sign the GCAP treaty in Tokyo", link=link,
            guid=f"{name}-1", description="<p>The Global Combat Air Programme.</p>",
            published=when)]), etag=f'"{name}"')
        lines.append(f"  - {{name: feed-{name}, url: '{feed_server.url(f'/{name}.xml')}'}}")
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "feeds.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", rules_dir=rules,
                        allow_private_addresses=True, slack_channel="#c", parse_workers=0)
    with open_app(settings, clock=clock, sleep=clock.sleep) as bot:
        bot.poller.backfill = False
        outcomes = bot.poller.cycle(force=True)
        assert sum(o.alerts for o in outcomes) == 1  # one alert, two thread replies
        cached = bot.poller._stories
        assert cached is not None
        fresh = StoryIndex(bot.store.recent_reports(cached.channels, clock() - DUPLICATE_WINDOW))
        (thread,) = _view(fresh).values()
        assert len(thread[1]) == 3
        assert _view(cached.index) == _view(fresh)
