"""The digest without the network: digests.yaml, schedules and periods, selection, folding,
rendering (text snapshot, hostile feed text), the store's reads and the claim rows."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from conftest import ROOT
from digestdata import W48_END, W48_START, DigestData

from bot.digest.build import build_digest, normalised_link, safe_link
from bot.digest.config import DigestConfig, load_digests
from bot.digest.render import compose, render_html, render_text
from bot.digest.schedule import (
    Period,
    cron_trigger,
    due_periods,
    last_period,
    parse_period,
)
from bot.errors import ConfigError
from bot.model import Entry, Hit
from bot.rules import RuleSet, load_rules
from bot.store import Store
from bot.store.digests import FAILED, RETRY, SENT, DigestStore, MatchedEntry

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("POLICYBOT_UPDATE_SNAPSHOTS") == "1"
WEEKLY = DigestConfig("weekly", "UK–Japan security", ("desk@example.org",))
W48 = Period(W48_START, W48_END, "2026-W48")


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(ROOT / "rules")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "digests.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- digests.yaml ---------------------------------------------------------------------------


def test_the_shipped_digests_file_declares_the_weekly_digest(rules: RuleSet) -> None:
    (weekly,) = load_digests(ROOT / "rules" / "digests.yaml", [r.id for r in rules.rules])
    assert weekly.name == "weekly" and weekly.recipients == ("desk@example.org",)
    assert weekly.schedule == "0 8 * * mon" and weekly.timezone == "Europe/London"
    included = sorted(r.id for r in rules.rules if weekly.includes(r))
    assert included == ["asset-protection", "gcap", "osa-recipients", "reshuffles"]


def test_defaults_follow_the_issue(tmp_path: Path) -> None:
    path = write(tmp_path, "digests:\n  - {name: w, title: T, recipients: [a@example.org]}\n")
    (d,) = load_digests(path)
    assert (d.schedule, d.timezone, d.period, d.grace) == (
        "0 8 * * mon", "Europe/London", timedelta(days=7), timedelta(days=2))
    assert d.experimental is True and d.skip_empty is False


def test_a_missing_digests_file_means_no_digests(tmp_path: Path) -> None:
    assert load_digests(tmp_path / "digests.yaml") == ()


@pytest.mark.parametrize(("body", "at", "wording"), [
    # ``at``: the text the error points at (its line and column are computed from it).
    ("  - {name: w, title: T, recipients: [a@example.org], shedule: '0 8 * * mon'}\n",
     "shedule", "unknown key 'shedule'; did you mean 'schedule'?"),
    ("  - name: w\n    title: T\n    recipients: [a@example.org, not-an-address]\n",
     "not-an-address", "recipient 'not-an-address' is not an email address"),
    ("  - {name: w, title: T, recipients: [a@example.org], timezone: Europe/Londn}\n",
     "Europe/Londn", "unknown timezone 'Europe/Londn'"),
    ("  - {name: w, title: T, recipients: [a@example.org], schedule: '0 25 * * mon'}\n",
     "'0 25", "schedule: Error validating expression '25'"),
    ("  - {name: w, title: T, recipients: [a@example.org], schedule: '0 8 * *'}\n",
     "'0 8", "expected 5 fields"),
    ("  - {name: w, title: T, recipients: [a@example.org], rules: [gcapp]}\n",
     "gcapp", "no rule with id 'gcapp'; did you mean 'gcap'?"),
    ("  - {name: w, title: T}\n", "{name", "digest needs 'recipients'"),
    ("  - {name: W!, title: T, recipients: [a@example.org]}\n", "W!", "needs a 'name'"),
    ("  - {name: w, title: T, recipients: [a@example.org], period: 7 days}\n",
     "7 days", "period: '7 days' is not a duration"),
    ("  - {name: w, title: T, recipients: [a@example.org], skip_empty: sometimes}\n",
     "sometimes", "skip_empty must be true or false"),
])
def test_a_bad_digest_is_one_line_naming_file_line_and_column(
    tmp_path: Path, body: str, at: str, wording: str
) -> None:
    text = "digests:\n" + body
    path = write(tmp_path, text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if at in t)
    col = text.splitlines()[line - 1].index(at) + 1
    with pytest.raises(ConfigError) as caught:
        load_digests(path, ["gcap", "osa-recipients"])
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}:{col}: "), message
    assert wording in message and "\n" not in message


def test_a_duplicate_digest_name_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "digests:\n  - {name: w, title: T, recipients: [a@example.org]}\n"
                           "  - {name: w, title: U, recipients: [b@example.org]}\n")
    with pytest.raises(ConfigError, match=r"digests.yaml:3:\d+: duplicate digest name 'w'"):
        load_digests(path)


# --- schedule and periods -------------------------------------------------------------------


def test_week_48_is_the_period_from_monday_23_to_monday_30_november() -> None:
    period = parse_period(WEEKLY, "2026-W48")
    assert (period.start, period.end, period.label) == (W48_START, W48_END, "2026-W48")
    assert parse_period(WEEKLY, "2026-11-30") == period


def test_the_default_period_is_the_last_complete_one() -> None:
    assert last_period(WEEKLY, datetime(2026, 12, 2, 12, 0, tzinfo=UTC)) == W48
    assert last_period(WEEKLY, W48_END).end == W48_END
    assert last_period(WEEKLY, W48_END - timedelta(seconds=1)).end == W48_START


def test_a_period_across_the_clock_change_keeps_monday_0800_local() -> None:
    # BST starts on Sunday 28 March 2027: that week is an hour shorter in UTC.
    period = parse_period(WEEKLY, "2027-W12")
    assert period.start == datetime(2027, 3, 22, 8, 0, tzinfo=UTC)
    assert period.end == datetime(2027, 3, 29, 7, 0, tzinfo=UTC)


def test_tokyo_digests_run_on_tokyo_time() -> None:
    tokyo = DigestConfig("jp", "T", ("a@example.org",), schedule="30 7 * * fri",
                         timezone="Asia/Tokyo")
    period = parse_period(tokyo, "2026-12-04")
    assert period.end == datetime(2026, 12, 3, 22, 30, tzinfo=UTC)


def test_a_numeric_weekday_means_what_it_means_in_cron() -> None:
    # APScheduler 3 counts weekdays from Monday; cron counts from Sunday (0 and 7).
    after = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday
    for expr, weekday in (("0 8 * * 1", 0), ("0 8 * * 0", 6), ("0 8 * * 7", 6),
                          ("0 8 * * 1-5", 0), ("0 8 * * mon", 0)):
        fire = cron_trigger(expr, "UTC").get_next_fire_time(None, after)
        assert fire.weekday() == weekday, expr


def test_a_missed_send_is_due_within_the_grace_and_not_after() -> None:
    assert due_periods(WEEKLY, W48_END - timedelta(minutes=1)) == []
    assert due_periods(WEEKLY, W48_END) == [W48]
    assert due_periods(WEEKLY, W48_END + timedelta(days=1, hours=23)) == [W48]
    assert due_periods(WEEKLY, W48_END + timedelta(days=2, minutes=1)) == []


@pytest.mark.parametrize(("text", "wording"), [
    ("2026-11-29", "not sent on 2026-11-29"),
    ("last week", "write an ISO week such as 2026-W48"),
    ("2026-W54", "no such ISO week"),
])
def test_a_bad_period_says_what_to_write(text: str, wording: str) -> None:
    with pytest.raises(ValueError, match=wording):
        parse_period(WEEKLY, text)


# --- building -------------------------------------------------------------------------------

_ids = iter(range(1, 10_000))


def matched(rule: str, title: str, *, feed: str = "uk-mod", link: str | None = None,
            summary: str = "", at: datetime = W48_START + timedelta(days=1),
            published: datetime | None = None, words: tuple[str, ...] = ()) -> MatchedEntry:
    hits = tuple(
        Hit(field, text.find(w), text.find(w) + len(w), w)
        for field, text in (("title", title), ("summary", summary)) for w in words
        if w in text)
    entry = Entry(key=title, title=title, link=link, summary=summary,
                  published=published or at)
    return MatchedEntry(next(_ids), entry, feed, None, rule, hits, at, at)


def test_sections_go_most_severe_first_then_busiest(rules: RuleSet) -> None:
    found = [
        matched("reshuffles", "New defence minister named"),
        matched("reshuffles", "Foreign secretary reshuffled"),
        matched("gcap", "GCAP treaty ratified"),
        matched("osa-recipients", "OSA radars for Manila"),
        matched("osa-recipients", "OSA patrol boats for Fiji"),
    ]
    digest = build_digest(WEEKLY, rules, W48, found)
    assert [s.rule_id for s in digest.sections] == ["osa-recipients", "gcap", "reshuffles"]
    assert digest.items == 5


def test_entries_are_newest_first_and_the_cut_is_counted(rules: RuleSet) -> None:
    found = [matched("gcap", f"GCAP item {i}", at=W48_START + timedelta(hours=i),
                     link=f"https://example.org/{i}") for i in range(20)]
    config = DigestConfig("weekly", "T", ("a@example.org",), max_per_rule=5)
    (section,) = build_digest(config, rules, W48, found).sections
    assert [i.title for i in section.items] == [f"GCAP item {i}" for i in (19, 18, 17, 16, 15)]
    assert (section.stories, section.more) == (20, 15)


def test_one_story_from_several_sources_is_one_line_with_also(rules: RuleSet) -> None:
    t = W48_START + timedelta(days=2)
    found = [
        matched("gcap", "UK, Japan and Italy sign the GCAP treaty", feed="uk-mod",
                link="https://www.gov.uk/news/gcap?utm_source=rss", at=t),
        matched("gcap", "GCAP treaty signed in Rome", feed="nikkei",
                link="http://gov.uk/news/gcap/", at=t + timedelta(hours=1)),
        matched("gcap", "UK, Japan and Italy sign GCAP treaty", feed="nhk",
                link="https://www3.nhk.or.jp/a", at=t + timedelta(hours=2)),
        matched("gcap", "GCAP: BAE Systems picks a supplier", feed="nhk",
                link="https://www3.nhk.or.jp/b", at=t + timedelta(hours=3)),
    ]
    (section,) = build_digest(WEEKLY, rules, W48, found).sections
    assert [(i.title, i.source, [s.name for s in i.also]) for i in section.items] == [
        ("GCAP: BAE Systems picks a supplier", "nhk", []),
        ("UK, Japan and Italy sign the GCAP treaty", "uk-mod", ["nikkei", "nhk"]),
    ]


def test_links_fold_by_identity_not_spelling() -> None:
    assert normalised_link("https://www.gov.uk/a/?utm_source=x#top") == \
        normalised_link("http://gov.uk/a")
    assert normalised_link("https://gov.uk/a?id=1") != normalised_link("https://gov.uk/a?id=2")


def test_experimental_rules_are_marked_or_left_out(rules: RuleSet, tmp_path: Path) -> None:
    text = (ROOT / "rules" / "gcap.yaml").read_text(encoding="utf-8")
    (tmp_path / "gcap.yaml").write_text(text.replace("status: stable", "status: experimental"),
                                        encoding="utf-8")
    (tmp_path / "lists").mkdir()
    experimental = load_rules(tmp_path)
    found = [matched("gcap", "GCAP treaty ratified")]
    (section,) = build_digest(WEEKLY, experimental, W48, found).sections
    assert section.experimental
    assert "[high, experimental]" in render_text(build_digest(WEEKLY, experimental, W48, found))
    without = DigestConfig("weekly", "T", ("a@example.org",), experimental=False)
    assert build_digest(without, experimental, W48, found).sections == ()


def test_only_the_digests_rules_and_only_this_periods_news(rules: RuleSet) -> None:
    only_gcap = DigestConfig("gcap-only", "GCAP", ("a@example.org",), rules=("gcap",))
    found = [
        matched("gcap", "GCAP news"),
        matched("osa-recipients", "OSA news"),  # routes to "weekly", not to "gcap-only"
        matched("gcap", "GCAP archive item", published=W48_START - timedelta(days=40)),
    ]
    digest = build_digest(only_gcap, rules, W48, found)
    assert [i.title for s in digest.sections for i in s.items] == ["GCAP news"]


def test_an_empty_period_says_nothing_matched(rules: RuleSet) -> None:
    digest = build_digest(WEEKLY, rules, W48, [], seen_per_source={"uk-mod": 12})
    assert digest.empty
    assert digest.subject == "UK–Japan security — week of 23 Nov: nothing matched"
    assert "Nothing matched this week." in render_text(digest)
    assert "Nothing matched this week." in render_html(digest)


# --- rendering ------------------------------------------------------------------------------


def snapshot_digest(rules: RuleSet) -> tuple[DigestConfig, list[MatchedEntry]]:
    t = W48_START
    summary = ("Japan will provide coastal surveillance radars to the Philippine Navy under "
               "its Official Security Assistance. The exchange of notes was signed in Manila "
               "on Tuesday, the foreign ministry said.")
    found = [
        matched("osa-recipients", "Japan to provide coastal radars to the Philippines",
                feed="mofa-en", link="https://www.mofa.go.jp/press/osa-1.html",
                summary=summary, at=t + timedelta(days=2, hours=1),
                words=("Official Security Assistance", "Philippine")),
        matched("osa-recipients", "Japan to provide coastal radars to the Philippines.",
                feed="nhk-world", link="https://www3.nhk.or.jp/nhkworld/osa.html",
                at=t + timedelta(days=2, hours=4)),
        matched("osa-recipients", "政府安全保障能力強化支援の対象国にジブチを追加",
                feed="nhk", link="https://www3.nhk.or.jp/news/djibouti.html",
                summary="政府は政府安全保障能力強化支援の対象国にジブチを加えると発表した。",
                at=t + timedelta(days=4, hours=2), words=("政府安全保障能力強化支援", "ジブチ")),
        matched("gcap", "GCAP treaty enters into force", feed="uk-mod",
                link="https://www.gov.uk/government/news/gcap-treaty",
                summary="The Global Combat Air Programme treaty between the UK, Japan and "
                        "Italy entered into force.", at=t + timedelta(days=1, hours=6),
                words=("Global Combat Air Programme",)),
        matched("reshuffles", "New Defence Minister appointed in Tokyo", feed="japan-times",
                link="https://www.japantimes.co.jp/news/minister/", at=t + timedelta(days=5)),
    ]
    return WEEKLY, found


def test_the_text_part_matches_its_snapshot(rules: RuleSet) -> None:
    from bot.store.digests import FeedProblem, FirstMention

    config, found = snapshot_digest(rules)
    djibouti = found[2]
    digest = build_digest(
        config, rules, W48, found,
        first_mentions=[FirstMention("osa-recipients", "Djibouti", djibouti.entry_id,
                                     djibouti.entry.title, djibouti.entry.link, "nhk",
                                     djibouti.matched_at)],
        seen_per_source={"mofa-en": 14, "nhk": 120, "uk-mod": 35, "bbc": 80},
        failing=[FeedProblem("rusi", None, "HTTP 503: Service Unavailable", 9,
                             W48_START + timedelta(days=1))])
    text = render_text(digest)
    path = SNAPSHOTS / "digest_weekly.txt"
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot {path.name}: run with POLICYBOT_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"{path.name} differs; if the change is intended, rerun with "
        "POLICYBOT_UPDATE_SNAPSHOTS=1 and review the diff")
    assert digest.subject == "UK–Japan security — week of 23 Nov: 4 items, 1 first mention"


HOSTILE_TITLE = 'GCAP <script>alert("x")</script> <img src=x onerror=alert(1)>\r\nBcc: a@evil.test'


def hostile_digest(rules: RuleSet) -> list[MatchedEntry]:
    return [
        matched("gcap", HOSTILE_TITLE, link="javascript:alert(document.cookie)",
                summary="GCAP </p><a href='javascript:x'>click</a>\u202eevil\nSubject: hi",
                words=("GCAP",)),
        matched("gcap", "GCAP data link", link="data:text/html;base64,PHNjcmlwdD4=",
                feed="nhk"),
        matched("gcap", "GCAP spaced link", link=" java\tscript:alert(1)", feed="bbc"),
    ]


def test_hostile_feed_text_is_inert_in_the_html_part(rules: RuleSet) -> None:
    found = [*hostile_digest(rules), matched("gcap", "GCAP fine", feed="fine",
                                             link="https://example.org/fine")]
    html = render_html(build_digest(WEEKLY, rules, W48, found))
    assert "<script" not in html and "<img" not in html and "onerror=" not in html.replace(
        "onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;" in html
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == ["https://example.org/fine"], hrefs
    assert "javascript:" not in " ".join(hrefs) and "\u202e" not in html


def test_hostile_feed_text_is_inert_in_the_text_part_and_headers(rules: RuleSet) -> None:
    digest = build_digest(WEEKLY, rules, W48, hostile_digest(rules))
    text = render_text(digest)
    assert "\r" not in text and "\u202e" not in text
    assert not any(line.startswith(("Bcc:", "Subject:")) for line in text.splitlines())
    # Feed text shows as text; the only link lines are the http(s) ones we wrote.
    links = [line.strip() for line in text.splitlines()
             if re.match(r"\s*[a-z][a-z0-9+.-]*:\S", line, re.I) and "://" in line]
    assert links == [], links
    assert not re.search(r"^\s*(javascript|data):", text, re.I | re.M)
    msg = compose(digest, sender="bot@example.org", recipients=["desk@example.org"],
                  message_id="<x@example.org>", date=W48_END)
    parsed = message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert parsed["Bcc"] is None and parsed["To"] == "desk@example.org"
    assert "\n" not in str(parsed["Subject"])


def test_the_message_is_multipart_alternative_text_first_html_last(rules: RuleSet) -> None:
    config, found = snapshot_digest(rules)
    digest = build_digest(config, rules, W48, found)
    msg = compose(digest, sender="bot@example.org", recipients=["desk@example.org"],
                  message_id="<x@example.org>", date=W48_END)
    parsed = message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in parsed.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert parsed["Subject"] == digest.subject
    assert parsed["Auto-Submitted"] == "auto-generated"


def test_the_html_inlines_its_css_and_adapts_to_phones_and_dark_mode(rules: RuleSet) -> None:
    config, found = snapshot_digest(rules)
    html = render_html(build_digest(config, rules, W48, found))
    assert 'style="' in html and '<p class="title" style=' in html
    assert "@media (max-width: 480px)" in html
    assert "@media (prefers-color-scheme: dark)" in html
    assert 'name="viewport" content="width=device-width' in html
    assert "<strong" in html and ">Official Security Assistance</strong>" in html


def test_safe_link_keeps_only_absolute_http_links() -> None:
    assert safe_link("https://example.org/a?b=c") == "https://example.org/a?b=c"
    for bad in ("javascript:alert(1)", "JAVASCRIPT:x", "data:text/html,x", "/relative",
                "https://", "http://exa mple.org", "vbscript:x", "https://example.org/\nBcc: x"):
        assert safe_link(bad) is None, bad


# --- the store: reads ------------------------------------------------------------------------


def test_the_period_reads_what_happened_in_it_and_nothing_else(store: Store) -> None:
    data = DigestData(store.engine, ["uk-mod", "nhk", "broken", "fine"])
    inside = data.entry("uk-mod", "GCAP inside", seen=W48_START, rules={"gcap": ["GCAP"]})
    data.entry("uk-mod", "GCAP before", seen=W48_START - timedelta(seconds=1),
               rules={"gcap": ["GCAP"]})
    data.entry("nhk", "GCAP at the end", seen=W48_END, rules={"gcap": ["GCAP"]})
    data.entry("nhk", "unmatched", seen=W48_START + timedelta(days=1))
    data.first_mention("osa-recipients", "Djibouti", inside, W48_START + timedelta(hours=1))
    data.failing("broken", "HTTP 503")
    digests = DigestStore(store.engine)

    found = digests.matches_between(W48_START, W48_END, {"gcap"})
    assert [(m.entry.title, m.feed_name, m.rule_id) for m in found] == [
        ("GCAP inside", "uk-mod", "gcap")]
    assert found[0].hits == (Hit("title", 0, 4, "GCAP"),)
    assert digests.matches_between(W48_START, W48_END, set()) == []
    assert digests.entries_per_source(W48_START, W48_END) == {"nhk": 1, "uk-mod": 1}
    (mention,) = digests.first_mentions_between(W48_START, W48_END)
    assert (mention.member, mention.title, mention.feed_name) == ("Djibouti", "GCAP inside",
                                                                  "uk-mod")
    assert [f.name for f in digests.failing_feeds(W48_START, W48_END)] == ["broken"]
    # A feed that failed only after the period is not blamed for it.
    assert digests.failing_feeds(W48_START - timedelta(days=14),
                                 W48_START - timedelta(days=7)) == []


# --- the store: claims -----------------------------------------------------------------------


def test_a_period_is_claimed_once(store: Store) -> None:
    digests = DigestStore(store.engine)
    now = W48_END
    first = digests.claim("weekly", W48_START, W48_END, now=now, recipients=["a@example.org"])
    second = digests.claim("weekly", W48_START, W48_END, now=now, recipients=["a@example.org"])
    assert first.claimed and not second.claimed
    digests.mark_sent(first.record.id, now=now, items=3, message_id="<m@x>")
    again = digests.claim("weekly", W48_START, W48_END, now=now + timedelta(hours=1),
                          recipients=["a@example.org"])
    assert not again.claimed and again.record.status == SENT
    other = digests.claim("other", W48_START, W48_END, now=now, recipients=["a@example.org"])
    assert other.claimed


def test_a_retry_is_claimed_when_due_and_force_takes_a_sent_period(store: Store) -> None:
    digests = DigestStore(store.engine)
    now = W48_END
    claim = digests.claim("weekly", W48_START, W48_END, now=now, recipients=["a@example.org"])
    digests.mark_retry(claim.record.id, at=now + timedelta(minutes=2), error="451 later")
    early = digests.claim("weekly", W48_START, W48_END, now=now + timedelta(minutes=1),
                          recipients=["a@example.org"])
    assert not early.claimed and early.record.status == RETRY
    due = digests.claim("weekly", W48_START, W48_END, now=now + timedelta(minutes=2),
                        recipients=["a@example.org"])
    assert due.claimed and due.record.attempts == 2
    # In flight: not even --force takes it (that would send twice at once).
    busy = digests.claim("weekly", W48_START, W48_END, now=now + timedelta(minutes=3),
                         recipients=["a@example.org"], force=True)
    assert not busy.claimed
    digests.mark_failed(claim.record.id, error="554 no")
    forced = digests.claim("weekly", W48_START, W48_END, now=now + timedelta(minutes=4),
                           recipients=["a@example.org"], force=True)
    assert forced.claimed and forced.record.attempts == 3
    assert digests.sends("weekly")[0].status != FAILED


def test_the_readme_digests_example_is_valid(tmp_path: Path, rules: RuleSet) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
                if b.startswith("digests:")]
    (weekly,) = load_digests(write(tmp_path, block), [r.id for r in rules.rules])
    assert weekly.rules == ("osa-recipients", "gcap") and weekly.grace == timedelta(days=2)
    assert (ROOT / "docs" / "digest.png").is_file()
