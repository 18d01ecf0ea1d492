"""render_slack and the console rendering: escaping, limits, highlights, snapshots."""

from __future__ import annotations

import io
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakeslack import hit as hit_in
from fakeslack import make_alert
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from bot.model import AlertRule, Hit, Severity
from bot.notify import ConsoleSender, Sender, render_slack
from bot.notify.slack_render import slack_len, slack_url
from bot.notify.snippet import clusters, is_boundary, make_snippet

SNAPSHOTS = Path(__file__).parent / "snapshots"
LINK = "https://www.mofa.go.jp/press/release/osa-philippines.html"
UPDATE = os.environ.get("POLICYBOT_UPDATE_SNAPSHOTS") == "1"

HOSTILE = [
    "<!channel> urgent",
    "<!here>",
    "<!everyone> read this",
    "ping <@U123>",
    "<!subteam^S1> team",
    "<https://evil.example|Click me> now",
    "a|b>",
    "&amp; already escaped",
    "<#C123> channel link",
    "<!date^1^{date}|x>",
]

# Our own angle-bracket sequences: the entry link and the date token. Nothing else may
# contain `<` once rendered.
OUR_DATE = re.compile(r"<!date\^\d+\^\{date_short_pretty\} \{time\}\|[0-9: UTC-]+>")


def all_texts(payload: dict[str, Any]) -> list[str]:
    """Every string Slack would parse: the fallback and each text object."""
    texts = [payload["text"]]
    for block in payload["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(e["text"] for e in block.get("elements", []))
    return texts


def live_sequences(text: str) -> list[str]:
    return re.findall(r"<[^>]*>", text)


def assert_inert(payload: dict[str, Any], allowed_links: tuple[str, ...] = ()) -> None:
    for text in all_texts(payload):
        for seq in live_sequences(OUR_DATE.sub("", text)):
            assert any(seq.startswith(f"<{link}|") for link in allowed_links), (seq, text)
        # A label must not open a second link or a mention inside ours.
        stripped = OUR_DATE.sub("", text)
        for link in allowed_links:
            stripped = stripped.replace(f"<{link}|", "")
        assert "<" not in stripped.replace("&lt;", "")


def assert_snapshot(name: str, payload: dict[str, Any]) -> None:
    path = SNAPSHOTS / f"{name}.json"
    rendered = json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
        return
    assert path.exists(), f"no snapshot {path.name}: run with POLICYBOT_UPDATE_SNAPSHOTS=1"
    assert rendered == path.read_text(encoding="utf-8"), (
        f"{path.name} differs; if the change is intended, rerun with POLICYBOT_UPDATE_SNAPSHOTS=1 "
        "and review the diff"
    )


def section_texts(payload: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section"]


# --- structure ----------------------------------------------------------------------------


def test_an_alert_renders_header_link_context_snippet_and_rules() -> None:
    summary = "Tokyo will fund coastal radars for Manila under OSA, officials said."
    alert = make_alert(summary=summary, hits=[hit_in(summary, "OSA"), hit_in(summary, "radars")])

    payload = render_slack(alert)

    types = [b["type"] for b in payload["blocks"]]
    assert types == ["header", "section", "context", "section", "context"]
    header = payload["blocks"][0]["text"]
    assert header["type"] == "plain_text"
    assert "HIGH" in header["text"] and "Japan OSA — recipient countries" in header["text"]
    link = payload["blocks"][1]["text"]["text"]
    assert link == (
        "*<https://www.mofa.go.jp/press/release/osa-philippines.html|"
        "Japan and the Philippines sign OSA coastal radar deal>*"
    )
    assert "mofa-en · Press Office · <!date^" in payload["blocks"][2]["elements"][0]["text"]
    assert "`osa-recipients` v3f2a9c0d1e4b" in payload["blocks"][4]["elements"][0]["text"]
    assert payload["text"].startswith("HIGH: Japan OSA — recipient countries — Japan and")


def test_every_mrkdwn_text_object_is_verbatim() -> None:
    payload = render_slack(make_alert(summary="@channel see #general at https://x.example"))
    for block in payload["blocks"]:
        objects = [block["text"]] if "text" in block else block["elements"]
        for obj in objects:
            if obj["type"] == "mrkdwn":
                assert obj["verbatim"] is True


def test_metadata_carries_the_alert_id_and_entry_key() -> None:
    payload = render_slack(make_alert(id=7, key="tag:mofa.go.jp,2026:osa-1"))

    assert payload["metadata"] == {
        "event_type": "policybot_alert",
        "event_payload": {"alert_id": 7, "entry_key": "tag:mofa.go.jp,2026:osa-1"},
    }


def test_the_date_uses_slack_date_formatting_with_a_utc_fallback() -> None:
    when = datetime(2026, 11, 24, 8, 30, tzinfo=UTC)
    payload = render_slack(make_alert(published=when))

    context = payload["blocks"][2]["elements"][0]["text"]
    assert (
        f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time}}|2026-11-24 08:30 UTC>"
        in (context)
    )


def test_an_entry_without_date_author_or_text_still_renders() -> None:
    payload = render_slack(make_alert(published=None, author=None, summary="", content=""))

    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "context", "context"]
    assert payload["blocks"][2]["elements"][0]["text"] == "mofa-en"


def test_the_header_names_the_highest_severity_and_every_rule() -> None:
    rules = [
        AlertRule("gcap", "GCAP programme", Severity.MEDIUM, "aaaa"),
        AlertRule("osa-recipients", "Japan OSA", Severity.CRITICAL, "bbbb"),
    ]
    payload = render_slack(make_alert(rules=rules))

    assert payload["blocks"][0]["text"]["text"] == "🚨 CRITICAL: GCAP programme · Japan OSA"
    rules_line = payload["blocks"][-1]["elements"][0]["text"]
    assert rules_line == "Rules: `gcap` vaaaa · `osa-recipients` vbbbb"


# --- escaping -----------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_feed_text_renders_inert(hostile: str) -> None:
    alert = make_alert(
        title=hostile,
        summary=f"before {hostile} after",
        author=hostile,
        feed_name="feed",
        hits=[hit_in(f"before {hostile} after", hostile)],
    )
    payload = render_slack(alert)

    assert_inert(
        payload, allowed_links=("https://www.mofa.go.jp/press/release/osa-philippines.html",)
    )
    for text in all_texts(payload):
        assert "<!channel" not in text and "<!here" not in text and "<@" not in text


def test_escaping_is_applied_once_to_already_escaped_text() -> None:
    payload = render_slack(make_alert(title="R&amp;D <b>"))

    assert "|R&amp;amp;D &lt;b&gt;>*" in payload["blocks"][1]["text"]["text"]


@pytest.mark.parametrize(
    "link",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<b>x</b>",
        "ftp://example.org/file",
        "//evil.example/path",
        "mailto:someone@example.org",
        "http://",
        "https://[::1",
    ],
)
def test_a_link_that_is_not_http_shows_the_title_unlinked(link: str) -> None:
    payload = render_slack(make_alert(title="Title", link=link))

    assert payload["blocks"][1]["text"]["text"] == "*Title*"


def test_pipe_angle_brackets_and_spaces_in_a_link_are_percent_encoded() -> None:
    link = 'https://example.org/a b|c<d>e?q=1&r="2"#frag'
    payload = render_slack(make_alert(title="T", link=link))

    text = payload["blocks"][1]["text"]["text"]
    assert text == "*<https://example.org/a%20b%7Cc%3Cd%3Ee?q=1&amp;r=%222%22#frag|T>*"


def test_an_international_domain_is_linked_in_punycode() -> None:
    host = "外務省.jp".encode("idna").decode("ascii")

    assert host.startswith("xn--")
    assert slack_url("https://外務省.jp/パス") == f"https://{host}/%E3%83%91%E3%82%B9"


def test_a_label_cannot_forge_a_second_link() -> None:
    payload = render_slack(make_alert(title="x> <https://evil.example|Official notice"))

    text = payload["blocks"][1]["text"]["text"]
    assert text.count("<") == 1
    assert "|x&gt; &lt;https://evil.example|Official notice>*" in text


def test_control_and_bidi_characters_are_dropped() -> None:
    payload = render_slack(make_alert(title="safe\u202etxt.exe\x1b[31m\x07 title"))

    assert "|safetxt.exe[31m title>" in payload["blocks"][1]["text"]["text"]


# --- highlights ---------------------------------------------------------------------------


def test_hits_are_bold_at_their_offsets() -> None:
    summary = "The OSA package names radars; OSAKA is not a hit, but the second OSA is."
    hits = [hit_in(summary, "OSA"), hit_in(summary, "radars"), hit_in(summary, "OSA", nth=2)]
    payload = render_slack(make_alert(summary=summary, hits=hits))

    snippet = section_texts(payload)[1]
    assert snippet == (
        "The *OSA* package names *radars*; OSAKA is not a hit, but the second *OSA* is."
    )


def test_bold_markers_wrap_the_escaped_hit() -> None:
    summary = "Budget for R&D and <!channel> items"
    hits = [hit_in(summary, "R&D"), hit_in(summary, "<!channel>")]
    payload = render_slack(make_alert(summary=summary, hits=hits))

    assert section_texts(payload)[1] == "Budget for *R&amp;D* and *&lt;!channel&gt;* items"


def test_a_hit_inside_cjk_text_gets_zero_width_word_boundaries() -> None:
    summary = "日英伊のGCAP計画について"
    payload = render_slack(make_alert(summary=summary, hits=[hit_in(summary, "GCAP")]))

    assert section_texts(payload)[1] == "日英伊の\u200b*GCAP*\u200b計画について"


def test_the_snippet_is_a_window_around_the_first_body_hit() -> None:
    content = ("Background paragraph. " * 40) + "The OSA grant funds radars. " + ("Tail. " * 80)
    alert = make_alert(
        title="OSA update",
        content=content,
        hits=[Hit("title", 0, 3, "OSA"), hit_in(content, "OSA", field="content")],
    )
    snippet = section_texts(render_slack(alert))[1]

    assert snippet.startswith("…") and snippet.endswith("…")
    assert "The *OSA* grant funds radars." in snippet
    assert len(snippet) < 500


def test_hits_outside_the_field_are_ignored() -> None:
    summary = "Short summary"
    hits = [Hit("summary", 5, 500, "x"), Hit("summary", -1, 2, "x"), Hit("author", 0, 2, "x")]
    payload = render_slack(make_alert(summary=summary, hits=hits))

    assert section_texts(payload)[1] == "Short summary"


def test_a_title_only_hit_gives_a_window_of_the_title() -> None:
    title = "Ministry confirms GCAP treaty ratification"
    snippet = make_snippet(make_alert(title=title).entry, [hit_in(title, "GCAP", field="title")])

    assert snippet is not None and snippet.field == "title"
    assert ("GCAP", True) in snippet.parts


def test_whitespace_and_newlines_in_a_snippet_collapse_to_single_spaces() -> None:
    summary = "Line one\n\n  OSA\tdeal\r\nsigned"
    payload = render_slack(make_alert(summary=summary, hits=[hit_in(summary, "OSA")]))

    assert section_texts(payload)[1] == "Line one *OSA* deal signed"


# --- limits -------------------------------------------------------------------------------

CJK_EMOJI = "日本の安全保障🇯🇵👩\u200d💻e\u0301🏽"


def assert_within_limits(payload: dict[str, Any]) -> None:
    assert len(payload["blocks"]) <= 50
    for block in payload["blocks"]:
        limit = 150 if block["type"] == "header" else 3000
        objects = [block["text"]] if "text" in block else block["elements"]
        for obj in objects:
            assert 0 < slack_len(obj["text"]) <= limit, (block["type"], slack_len(obj["text"]))


def test_a_10000_character_cjk_and_emoji_title_renders_within_limits() -> None:
    title = (CJK_EMOJI * 1000)[:10_000]
    rules = [AlertRule(f"rule-{i}", f"ルール {i} 🚀 " * 5, Severity.LOW, "v") for i in range(40)]
    payload = render_slack(make_alert(title=title, summary=title, rules=rules))

    assert_within_limits(payload)
    label = payload["blocks"][1]["text"]["text"].split("|", 1)[1].removesuffix(">*")
    assert label.endswith("…")
    kept = label.removesuffix("…")
    assert title.startswith(kept) and is_boundary(title, len(kept))
    assert payload["blocks"][0]["text"]["text"].endswith("…")
    assert slack_len(payload["text"]) <= 1000


def test_a_long_title_is_cut_between_whole_escapes() -> None:
    payload = render_slack(make_alert(title="&<>" * 4000, link=None))

    text = payload["blocks"][1]["text"]["text"]
    assert_within_limits(payload)
    body = text.removeprefix("*").removesuffix("…*")
    assert re.fullmatch(r"(&amp;|&lt;|&gt;)+", body)


def test_a_snippet_of_escape_heavy_text_fits_the_section_limit() -> None:
    summary = "&" * 10_000
    hits = [Hit("summary", 100, 9_000, "&")]
    payload = render_slack(make_alert(summary=summary, hits=hits))

    assert_within_limits(payload)
    snippet = section_texts(payload)[1]
    assert re.fullmatch(r"…?(&amp;)*\*?(&amp;)*\*?(&amp;)*…?", snippet), snippet[:80]
    assert snippet.count("*") in (0, 2)


def test_clusters_keep_flags_zwj_sequences_and_accents_whole() -> None:
    assert clusters("🇯🇵👩\u200d💻e\u0301👍🏽a") == ["🇯🇵", "👩\u200d💻", "e\u0301", "👍🏽", "a"]


def test_a_very_long_link_is_not_linked() -> None:
    payload = render_slack(make_alert(title="T", link="https://example.org/" + "a" * 5000))

    assert payload["blocks"][1]["text"]["text"] == "*T*"


HOSTILE_ALPHABET = st.sampled_from(
    list("<>&|*_~`!@#^:; \n\tab日本")
    + ["🇯🇵", "👩\u200d💻", "e\u0301", "&amp;", "<!here>", "\u202e"]
)


@settings(max_examples=150, deadline=None)
@given(
    title=st.lists(HOSTILE_ALPHABET, max_size=400).map("".join),
    summary=st.lists(HOSTILE_ALPHABET, max_size=400).map("".join),
    spans=st.lists(st.tuples(st.integers(-5, 450), st.integers(0, 60)), max_size=6),
)
def test_any_feed_text_renders_inert_and_within_limits(
    title: str, summary: str, spans: list[tuple[int, int]]
) -> None:
    hits = [Hit("summary", start, start + size, "t") for start, size in spans]
    payload = render_slack(make_alert(title=title, summary=summary, author=title, hits=hits))

    assert_within_limits(payload)
    assert_inert(payload, allowed_links=(LINK,))
    for text in all_texts(payload):
        # No escape is ever cut: every `&` starts a whole entity.
        assert re.fullmatch(r"([^&]|&amp;|&lt;|&gt;)*", text, flags=re.S), text


# --- snapshots ----------------------------------------------------------------------------


def snapshot_alerts() -> dict[str, Any]:
    summary = (
        "Kishida returned from Manila with an Official Security Assistance agreement: "
        "the OSA grant funds coastal radars for the Philippine Navy."
    )
    ja_summary = "政府は、政府安全保障能力強化支援（OSA）の対象国にジブチを加えると発表した。"
    hostile_summary = "Click <https://evil.example|here> & tell <!channel> <@U123> <!subteam^S1>"
    return {
        "osa_english": make_alert(
            summary=summary,
            hits=[
                hit_in(summary, "Official Security Assistance"),
                hit_in(summary, "OSA"),
                hit_in(summary, "radars"),
            ],
        ),
        "osa_japanese": make_alert(
            id=43,
            title="ジブチをOSA対象国に追加",
            link="https://www.mofa.go.jp/mofaj/press/release/pressit_000001_00001.html",
            author=None,
            feed_name="mofa-ja",
            summary=ja_summary,
            hits=[hit_in(ja_summary, "政府安全保障能力強化支援"), hit_in(ja_summary, "対象国")],
            rules=[
                AlertRule(
                    "osa-recipients", "Japan OSA — recipient countries", Severity.HIGH, "9" * 64
                ),
                AlertRule("djibouti", "Djibouti watch", Severity.CRITICAL, "ab12cd34ef56ab12"),
            ],
            key="https://www.mofa.go.jp/mofaj/press/release/pressit_000001_00001.html",
        ),
        "hostile_feed": make_alert(
            id=44,
            title="<!channel> GCAP | <https://evil.example|Official MoD notice>",
            link="javascript:alert(document.cookie)",
            author="<@U123> & co",
            feed_name="uk-mod",
            summary=hostile_summary,
            hits=[hit_in(hostile_summary, "<!channel>")],
            key="tag:evil,2026:1",
        ),
        "bare_entry": make_alert(
            id=45,
            title="",
            link=None,
            author=None,
            published=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            content="Minister reshuffle announced.\nNo further details.",
            rules=[AlertRule("reshuffle", "Cabinet reshuffles", Severity.LOW, "0123456789abcdef")],
            key="sha256:feedbeef",
        ),
    }


@pytest.mark.parametrize("name", list(snapshot_alerts()))
def test_rendered_alerts_match_their_snapshots(name: str) -> None:
    payload = render_slack(snapshot_alerts()[name])

    assert_within_limits(payload)
    assert_snapshot(name, payload)


def test_rendering_is_deterministic() -> None:
    alerts = snapshot_alerts()
    assert all(render_slack(a) == render_slack(a) for a in alerts.values())


# --- console ------------------------------------------------------------------------------


def console_output(alert: Any, *, color: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=200,
        force_terminal=color,
        color_system="standard" if color else None,
        legacy_windows=False,
    )
    ConsoleSender(console).send(alert)
    return buffer.getvalue()


def test_the_console_shows_title_link_feed_snippet_and_rules() -> None:
    summary = "Tokyo will fund coastal radars under OSA."
    output = console_output(make_alert(summary=summary, hits=[hit_in(summary, "OSA")]))

    assert "HIGH · Japan OSA — recipient countries" in output
    assert "Japan and the Philippines sign OSA coastal radar deal" in output
    assert "https://www.mofa.go.jp/press/release/osa-philippines.html" in output
    assert "mofa-en · Press Office · 2026-11-24 08:30 UTC" in output
    assert "Tokyo will fund coastal radars under OSA." in output
    assert "rules: osa-recipients v3f2a9c0d1e4b" in output


def test_the_console_prints_rich_markup_in_feed_text_literally() -> None:
    title = "[bold red]Pwned[/bold red] [link=https://evil.example]x[/link] :warning:"
    output = console_output(make_alert(title=title, summary="[/] unbalanced [b]"))

    assert title in output
    assert "[/] unbalanced [b]" in output


def test_the_console_highlights_hits_and_drops_escape_sequences() -> None:
    summary = "The \x1b[2J OSA grant"
    output = console_output(make_alert(summary=summary, hits=[hit_in(summary, "OSA")]), color=True)

    assert "\x1b[2J" not in output
    assert "\x1b[1;7mOSA\x1b[0m" in output  # bold reverse


def test_the_console_sender_reports_the_channel_without_a_ts() -> None:
    sender: Sender = ConsoleSender(Console(file=io.StringIO()))

    sent = sender.send(make_alert(channel="#x"))

    assert (sender.name, sent.channel, sent.ts) == ("console", "#x", None)


# --- first mentions, confirmations, replies, summaries (issue 4) ---------------------------


def reply_to(alert_title: str = "Japan and the Philippines sign OSA coastal radar deal",
             **kwargs: Any) -> Any:
    from bot.messages import Duplicate, Posted, Reply

    alert = make_alert(**kwargs)
    return Reply(id=9, channel=alert.channel, parent_id=42, thread=Posted("C0J", "1.000001"),
                 feed_name=alert.feed_name, entry=alert.entry, rules=alert.rules,
                 parent_title=alert_title, duplicate=Duplicate("title", True, "mofa-en"))


def test_a_first_mention_is_named_in_the_rules_line() -> None:
    from dataclasses import replace

    payload = render_slack(replace(make_alert(), first_mentions=("Djibouti", "<!here>")))
    rules = payload["blocks"][-1]["elements"][0]["text"]
    assert "first mention: Djibouti, &lt;!here&gt;" in rules
    assert_inert(payload, (LINK,))


def test_a_confirmed_alert_says_by_how_many_independent_sources() -> None:
    payload = render_slack(make_alert(), sources=("mofa-en", "nhk-world", "<!channel>"))
    assert payload["blocks"][-1]["elements"][0]["text"] == (
        "\u2705 Confirmed by 3 independent sources: mofa-en, nhk-world, &lt;!channel&gt;")
    assert payload["text"].endswith("(confirmed by 3 sources)")
    assert render_slack(make_alert(), sources=("mofa-en",)) == render_slack(make_alert())


@pytest.mark.parametrize("hostile", HOSTILE)
def test_replies_and_summaries_render_hostile_feed_text_inert(hostile: str) -> None:
    from bot.messages import Change, Summary
    from bot.notify.slack_render import render_reply, render_summary

    reply = reply_to(title=hostile, author=hostile, feed_name=hostile)
    assert_inert(render_reply(reply), (LINK,))
    from dataclasses import replace

    changed = replace(reply, duplicate=None, change=Change(
        (hostile,), (hostile,), "summary", hostile, hostile))
    assert_inert(render_reply(changed), (LINK,))
    summary = Summary(5, "#japan-defence", (make_alert(title=hostile, feed_name=hostile),))
    assert_inert(render_summary(summary), (LINK,))


def test_a_summary_of_a_thousand_alerts_stays_within_slacks_limits() -> None:
    from bot.messages import Summary
    from bot.notify.slack_render import render_summary

    alerts = tuple(make_alert(id=i, title="日英" * 300 + "👩‍💻" * 50) for i in range(1000))
    payload = render_summary(Summary(1, "#japan-defence", alerts))
    assert len(payload["blocks"]) <= 50
    for text in all_texts(payload):
        assert slack_len(text) <= 3000
    assert "…and " in payload["blocks"][-1]["elements"][0]["text"]
    assert payload["metadata"]["event_payload"] == {"alert_id": 1, "kind": "summary"}


def test_a_reply_without_a_thread_names_the_alert_it_belongs_to() -> None:
    from dataclasses import replace

    from bot.notify.slack_render import render_reply

    payload = render_reply(replace(reply_to(), thread=None))
    assert "re: Japan and the Philippines" in payload["blocks"][-1]["elements"][0]["text"]
    assert payload["metadata"]["event_payload"]["kind"] == "reply"


def test_the_console_shows_replies_updates_and_summaries_like_slack() -> None:
    from dataclasses import replace

    from bot.messages import Change, Summary, Update

    buffer = io.StringIO()
    sender = ConsoleSender(Console(file=buffer, width=120, force_terminal=False))
    sender.send(reply_to())
    sender.send(replace(reply_to(), duplicate=None, change=Change(("sign",), ("ratify",))))
    sender.send(Update(3, "#japan-defence", make_alert(), None, ("mofa-en", "nhk-world")))
    sender.send(Summary(4, "#japan-defence", (make_alert(title="Coastal radar <b>deal</b>"),)))
    printed = buffer.getvalue()
    assert "also reported by mofa-en" in printed
    assert "removed “sign”; added “ratify”" in printed
    assert "confirmed by 2 independent sources: mofa-en, nhk-world" in printed
    assert "1 more alerts (flood control)" in printed and "Coastal radar <b>deal</b>" in printed
