"""bot.plan: which story an entry is, what changed, and what a poll posts. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.decide import RuleRoute
from bot.model import AlertRule, Entry, Match, RuleStatus, Severity
from bot.plan import (
    Candidate,
    PostedAlert,
    Previous,
    Report,
    describe_change,
    plan_outbox,
    similar_titles,
    story_link,
)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
GCAP = AlertRule("gcap", "GCAP", Severity.HIGH, "v1")
OSA = AlertRule("osa", "OSA", Severity.HIGH, "v1")
ROUTES = {
    "gcap": RuleRoute(GCAP, RuleStatus.STABLE, ("#japan-defence",)),
    "osa": RuleRoute(OSA, RuleStatus.STABLE, ("#japan-defence",)),
}
TITLE = "UK, Japan and Italy sign the GCAP treaty in Tokyo"


def cand(key: str, title: str = TITLE, link: str | None = None, entry_id: int | None = None,
         rules: tuple[str, ...] = ("gcap",), summary: str = "") -> Candidate:
    entry = Entry(key=key, title=title, link=link, summary=summary, content_hash=f"h-{title}")
    return Candidate(entry, entry_id, tuple(Match(r, "v1") for r in rules))


def first_alert(thread_id: int = 1, feed: str = "uk-mod", link: str | None = None,
                title: str = TITLE, at: datetime = NOW - timedelta(hours=1)) -> Report:
    return Report(thread_id, "#japan-defence", feed, link, title, at, True)


@pytest.mark.parametrize("link", [
    "https://www.gov.uk/news/gcap?utm_source=rss&utm_medium=feed",
    "http://gov.uk/news/gcap/",
    "https://gov.uk/news/gcap#section-2",
    "https://gov.uk:443/news/gcap?fbclid=IwAR0&gclid=xyz",
])
def test_tracking_parameters_fragments_and_www_do_not_make_a_new_story(link: str) -> None:
    assert story_link(link) == "gov.uk/news/gcap"


def test_a_query_that_names_the_page_is_kept_and_sorted() -> None:
    assert story_link("https://x.jp/p?id=2&lang=ja&utm_campaign=y") == "x.jp/p?id=2&lang=ja"
    assert story_link("https://x.jp/p?lang=ja&id=2") == story_link("https://x.jp/p?id=2&lang=ja")
    assert story_link("https://x.jp/p?id=3") != story_link("https://x.jp/p?id=2")
    assert story_link("mailto:press@x.jp") is None


@pytest.mark.parametrize(("a", "b", "same"), [
    (TITLE, "UK, Japan and Italy sign GCAP treaty in Tokyo", True),
    (TITLE, "uk japan italy sign the gcap treaty in tokyo!", True),
    ("GCAP partners open a new industry office in Rome",
     "GCAP partners open a new industry office in Tokyo", False),
    ("Defence Secretary's statement, 25 November 2026",
     "Defence Secretary's statement, 26 November 2026", False),
    ("Press release", "Press release", False),  # too short to say anything
    ("日英伊、次期戦闘機GCAPの条約に署名", "日英伊が次期戦闘機GCAPの条約に署名", True),
    ("日英伊、次期戦闘機GCAPの条約に署名", "日英伊、次期戦闘機GCAPの開発拠点を新設", False),
])
def test_near_identical_titles(a: str, b: str, same: bool) -> None:
    assert similar_titles(a, b) is same


def test_a_second_source_for_a_story_is_a_reply_and_an_update() -> None:
    plan = plan_outbox([cand("dn-1", "UK, Japan and Italy sign GCAP treaty in Tokyo",
                             "https://defensenews.com/gcap")],
                       ROUTES, threads=[first_alert(link="https://gov.uk/gcap")],
                       feed_name="defence-news", now=NOW)
    assert plan.alerts == ()
    (reply,) = plan.replies
    assert (reply.parent_id, reply.duplicate and reply.duplicate.reason) == (1, "title")
    assert reply.duplicate is not None and reply.duplicate.independent
    (update,) = plan.updates
    assert (update.parent_id, update.sources) == (1, 2)


def test_the_same_page_in_a_second_feed_of_the_same_site_confirms_nothing() -> None:
    plan = plan_outbox([cand("fcdo-1", link="https://www.gov.uk/gcap?utm_source=fcdo")],
                       ROUTES, threads=[first_alert(link="https://gov.uk/gcap")],
                       feed_name="uk-fcdo", now=NOW)
    (reply,) = plan.replies
    assert reply.duplicate is not None and reply.duplicate.reason == "link"
    assert not reply.duplicate.independent
    assert plan.updates == ()


def test_a_third_source_updates_again_but_a_repeat_source_does_not() -> None:
    threads = [first_alert(link="https://gov.uk/gcap"),
               Report(1, "#japan-defence", "defence-news", "https://defensenews.com/gcap", TITLE,
                      NOW - timedelta(minutes=30), False, True)]
    again = plan_outbox([cand("dn-2", link="https://defensenews.com/gcap-2")], ROUTES,
                        threads=threads, feed_name="defence-news", now=NOW)
    assert len(again.replies) == 1 and again.updates == ()
    third = plan_outbox([cand("nhk-1", link="https://nhk.or.jp/gcap")], ROUTES,
                        threads=threads, feed_name="nhk", now=NOW)
    assert [u.sources for u in third.updates] == [3]


def test_two_entries_of_one_poll_on_one_story_are_an_alert_and_a_reply() -> None:
    plan = plan_outbox([cand("a", link="https://x.jp/gcap"),
                        cand("b", link="https://x.jp/gcap?utm_source=y")],
                       ROUTES, feed_name="uk-mod", now=NOW)
    assert [a.entry_key for a in plan.alerts] == ["a"]
    (reply,) = plan.replies
    assert (reply.parent_id, reply.parent_key) == (None, "a")


def test_an_old_story_is_not_a_duplicate() -> None:
    plan = plan_outbox([cand("dn-1", link="https://gov.uk/gcap")], ROUTES,
                       threads=[first_alert(link="https://gov.uk/gcap",
                                            at=NOW - timedelta(hours=73))],
                       feed_name="defence-news", now=NOW)
    assert len(plan.alerts) == 1 and plan.replies == ()


def test_a_change_to_a_posted_alert_is_a_reply_with_the_words_changed() -> None:
    old = Entry(key="k", title=TITLE, summary="The programme moves to its next phase.")
    previous = {7: Previous(old, ("gcap",), (PostedAlert(3, "#japan-defence", "sent"),))}
    changed = cand("k", TITLE.replace("sign", "ratify"), entry_id=7,
                   summary="The programme moves to its build phase.")
    plan = plan_outbox([changed], ROUTES, previous=previous, feed_name="uk-mod", now=NOW)
    assert plan.alerts == ()
    (reply,) = plan.replies
    assert reply.parent_id == 3 and reply.change is not None
    assert (reply.change.title_removed, reply.change.title_added) == (("sign",), ("ratify",))
    assert (reply.change.text_removed, reply.change.text_added) == ("next", "build")


def test_a_change_before_the_alert_went_out_needs_no_reply() -> None:
    old = Entry(key="k", title=TITLE)
    previous = {7: Previous(old, ("gcap",), (PostedAlert(3, "#japan-defence", "pending"),))}
    plan = plan_outbox([cand("k", TITLE + " (update)", entry_id=7)], ROUTES,
                       previous=previous, feed_name="uk-mod", now=NOW)
    assert plan == type(plan)()


def test_a_rule_that_matches_only_after_the_change_is_a_new_alert_for_that_rule() -> None:
    old = Entry(key="k", title=TITLE)
    previous = {7: Previous(old, ("gcap",), (PostedAlert(3, "#japan-defence", "sent"),))}
    changed = cand("k", TITLE + " as Japan widens OSA", entry_id=7, rules=("gcap", "osa"))
    plan = plan_outbox([changed], ROUTES, previous=previous, feed_name="uk-mod", now=NOW)
    assert [[r.id for r in a.rules] for a in plan.alerts] == [["osa"]]
    assert len(plan.replies) == 1, "and the first alert's thread says what changed"


def test_change_replies_stop_after_five_per_alert() -> None:
    old = Entry(key="k", title=TITLE)
    previous = {7: Previous(old, ("gcap",), (PostedAlert(3, "#japan-defence", "sent", 5),))}
    plan = plan_outbox([cand("k", TITLE + " (live)", entry_id=7)], ROUTES,
                       previous=previous, feed_name="uk-mod", now=NOW)
    assert plan.replies == ()


def test_whitespace_only_edits_are_no_change() -> None:
    old = Entry(key="k", title=TITLE, summary="One  two\nthree")
    assert describe_change(old, Entry(key="k", title=TITLE + " ", summary="One two three")).empty


def test_a_japanese_title_change_names_the_characters() -> None:
    old = Entry(key="k", title="防衛相が英国を訪問")
    change = describe_change(old, Entry(key="k", title="防衛相が豪州を訪問"))
    assert (change.title_removed, change.title_added) == (("英国",), ("豪州",))
