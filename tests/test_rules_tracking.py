"""`track: LIST` end to end in the store: first mentions are recorded once per (rule,
member), in the poll's transaction, named on that entry's alerts, and readable by period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.model import AlertRule, Entry, FeedSource, Hit, Match, Severity
from bot.store import AlertWrite, EntryWrite, PollWrite, Store

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
OSA = AlertRule("osa-recipients", "OSA", Severity.HIGH, "v1")
GCAP = AlertRule("gcap", "GCAP", Severity.HIGH, "v1")


def _poll(feed_id: int, key: str, members: tuple[str, ...], now: datetime,
          rules: tuple[AlertRule, ...] = (OSA,)) -> PollWrite:
    entry = Entry(key=key, title=f"OSA radars for {', '.join(members)}", content_hash=key,
                  link=f"https://example.org/{key}")
    match = Match(OSA.id, "v1", (Hit("title", 0, 3, "OSA"),))
    return PollWrite(
        feed_id=feed_id, now=now,
        entries=(EntryWrite(entry, None, (match,), tuple((OSA.id, m) for m in members)),),
        alerts=(AlertWrite(key, "#japan", rules, match.hits),),
    )


def _feed(store: Store) -> int:
    store.sync_feeds([FeedSource(name="mofa", url="https://example.org/mofa.xml")], NOW)
    (feed,) = store.list_feeds()
    return feed.id


def test_a_member_is_a_first_mention_once_per_rule_and_the_alert_names_it(store: Store) -> None:
    feed_id = _feed(store)
    store.save_poll(_poll(feed_id, "a", ("Philippines", "Djibouti"), NOW))
    store.save_poll(_poll(feed_id, "b", ("Djibouti", "Fiji"), NOW + timedelta(hours=1)))
    alerts = {a.entry.key: a for a in store.claim_alerts(NOW + timedelta(hours=2))}
    assert alerts["a"].first_mentions == ("Philippines", "Djibouti")
    assert alerts["b"].first_mentions == ("Fiji",), "Djibouti was already mentioned by 'a'"


def test_first_mentions_only_name_the_rules_of_the_alert(store: Store) -> None:
    feed_id = _feed(store)
    store.save_poll(_poll(feed_id, "a", ("Tonga",), NOW, rules=(GCAP,)))
    (alert,) = store.claim_alerts(NOW)
    assert alert.first_mentions == ()
    (mention,) = store.first_mentions_between(NOW, NOW + timedelta(days=7))
    assert (mention.rule_id, mention.member) == ("osa-recipients", "Tonga")


def test_first_mentions_between_reads_a_period_with_the_entry_and_feed(store: Store) -> None:
    feed_id = _feed(store)
    store.save_poll(_poll(feed_id, "a", ("Philippines",), NOW))
    store.save_poll(_poll(feed_id, "b", ("Fiji",), NOW + timedelta(days=8)))
    week = store.first_mentions_between(NOW, NOW + timedelta(days=7))
    assert [(m.member, m.title, m.link, m.feed_name, m.seen_at) for m in week] == [
        ("Philippines", "OSA radars for Philippines", "https://example.org/a", "mofa", NOW)]
    later = store.first_mentions_between(NOW + timedelta(days=7), NOW + timedelta(days=14))
    assert [m.member for m in later] == ["Fiji"]
