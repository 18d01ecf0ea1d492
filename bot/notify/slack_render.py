"""``render_slack(alert) -> dict``: what an alert says in Slack, as Block Kit. Pure.

Feed text is hostile until proven otherwise. Every feed-derived string goes through
``escape_mrkdwn`` (Slack's three control characters, https://docs.slack.dev/messaging/
formatting-message-text#escaping), every mrkdwn text object is ``verbatim`` (no automatic
parsing of names or URLs in plain text), and the only ``<…>`` sequences in a message are the
ones built here: the entry's link (http/https only, with ``|``, ``<``, ``>`` and spaces
percent-encoded) and a ``<!date^…>`` timestamp. ``link_names``/``parse`` are never set.

Limits (https://docs.slack.dev/reference/block-kit/blocks): header text 150 characters,
section and mrkdwn text 3,000, 50 blocks per message. Lengths are counted in UTF-16 code
units, which is never less than a count of code points, so a text that fits by our count
fits by Slack's whichever it uses. Texts are cut between user-perceived characters and
after whole escapes (``&amp;`` is never split), ending in "…".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from bot.messages import Change, Message, Reply, Summary, Update
from bot.model import Alert, AlertRule, Severity
from bot.notify.snippet import Snippet, clean_inline, clusters, make_snippet

EVENT_TYPE = "policybot_alert"

HEADER_MAX = 150
SECTION_MAX = 3000
MAX_BLOCKS = 50
TITLE_MAX = 500  # an alert shows a headline, not a 3,000-character wall
AUTHOR_MAX = 100
TEXT_MAX = 1000  # the notification fallback
URL_MAX = 2000  # longer links are shown unlinked rather than eat the section's budget
ENTRY_KEY_MAX = 1000
ELLIPSIS = "…"
_ZWSP = "\u200b"

SEVERITY_EMOJI = {
    Severity.CRITICAL: "\U0001f6a8",  # 🚨
    Severity.HIGH: "\U0001f534",  # 🔴
    Severity.MEDIUM: "\U0001f7e0",  # 🟠
    Severity.LOW: "\U0001f535",  # 🔵
}

# RFC 3986 reserved and unreserved punctuation stay as they are; everything else (space,
# `|`, `<`, `>`, quotes, braces, backslash, controls, non-ASCII) is percent-encoded, so a URL
# can neither end our `<url|label>` early nor start a label of its own.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"


def slack_len(text: str) -> int:
    """Length as Slack may count it: UTF-16 code units (an emoji outside the BMP is 2)."""
    return len(text.encode("utf-16-le")) // 2


def escape_mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit(units: Sequence[str], limit: int) -> str:
    """Join ``units`` (each a character with its escape, or an atomic run like a bold hit),
    dropping whole units from the end and adding "…" if the result would exceed ``limit``."""
    total = sum(slack_len(u) for u in units)
    if total <= limit:
        return "".join(units)
    budget = limit - slack_len(ELLIPSIS)
    out: list[str] = []
    used = 0
    for unit in units:
        size = slack_len(unit)
        if used + size > budget:
            break
        out.append(unit)
        used += size
    return "".join(out).rstrip() + ELLIPSIS


def mrkdwn_units(text: str) -> list[str]:
    """Feed text as escaped units, one per user-perceived character."""
    return [escape_mrkdwn(c) for c in clusters(clean_inline(text).strip())]


def plain_units(text: str) -> list[str]:
    return clusters(clean_inline(text).strip())


def slack_url(link: str | None) -> str | None:
    """The link as it may appear inside ``<…|…>``, or None if it must not be linked."""
    if not link:
        return None
    link = link.strip()
    try:
        parts = urlsplit(link)
        hostname = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not hostname:
        return None
    if not parts.netloc.isascii():
        try:
            ascii_host = hostname.encode("idna").decode("ascii")
        except UnicodeError:
            return None
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (f"{userinfo}@" if userinfo else "") + ascii_host
        netloc += f":{port}" if port is not None else ""
        link = parts._replace(netloc=netloc).geturl()
    quoted = escape_mrkdwn(quote(link, safe=_URL_SAFE))
    return quoted if slack_len(quoted) <= URL_MAX else None


def _slack_date(when: datetime) -> str:
    """Slack renders ``<!date^…>`` in the reader's timezone; the fallback is UTC.
    https://docs.slack.dev/messaging/formatting-message-text#date-formatting"""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    fallback = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def alert_time(alert: Alert) -> datetime | None:
    return alert.entry.published or alert.entry.updated or alert.created_at


def rule_titles(alert: Alert) -> list[str]:
    return list(dict.fromkeys(r.title for r in alert.rules))


def short_version(version: str) -> str:
    return version[:12]


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _joined_units(pieces: Iterable[list[str]], sep: str) -> list[str]:
    units: list[str] = []
    for piece in pieces:
        if not any(piece):
            continue
        if units:
            units.append(sep)
        units.extend(piece)
    return units


def _header(alert: Alert) -> str:
    severity = alert.severity
    prefix = f"{SEVERITY_EMOJI[severity]} {severity.value.upper()}"
    titles = _joined_units((plain_units(t) for t in rule_titles(alert)), " · ")
    return fit([prefix, ": ", *titles] if titles else [prefix], HEADER_MAX)


def _title_section(alert: Alert) -> str:
    label_units = mrkdwn_units(alert.entry.title) or ["(untitled)"]
    url = slack_url(alert.entry.link)
    if url is None:
        return "*" + fit(label_units, min(TITLE_MAX, SECTION_MAX - 2)) + "*"
    framing = slack_len(f"*<{url}|>*")
    return f"*<{url}|{fit(label_units, min(TITLE_MAX, SECTION_MAX - framing))}>*"


def _meta_context(alert: Alert) -> str:
    # Each piece is one unit, so that the line is cut between pieces, never in an escape.
    pieces = [[fit(mrkdwn_units(alert.feed_name), AUTHOR_MAX)]]
    if alert.entry.author:
        pieces.append([fit(mrkdwn_units(alert.entry.author), AUTHOR_MAX)])
    when = alert_time(alert)
    if when is not None:
        pieces.append([_slack_date(when)])  # ours, atomic: never cut
    return fit(_joined_units(pieces, " · "), SECTION_MAX)


def _needs_boundary(neighbour: str) -> bool:
    return (
        bool(neighbour)
        and not neighbour.isspace()
        and not (neighbour.isascii() and not neighbour.isalnum())
    )


def snippet_units(snippet: Snippet) -> list[str]:
    """Escape each piece, then wrap hits in ``*…*``: a hit is one unit, so a cut never
    leaves a marker open, and no escape is ever split by the markers."""
    units: list[str] = []
    parts = snippet.parts
    for i, (piece, is_hit) in enumerate(parts):
        if not is_hit:
            units.extend(escape_mrkdwn(c) for c in clusters(piece))
            continue
        # Slack only sees `*` as bold next to a space or ASCII punctuation; next to a letter
        # or CJK punctuation (日英伊の*GCAP*計画) a zero-width space supplies the boundary.
        before = parts[i - 1][0][-1:] if i > 0 else ""
        after = parts[i + 1][0][:1] if i + 1 < len(parts) else ""
        lead = _ZWSP if _needs_boundary(before) else ""
        trail = _ZWSP if _needs_boundary(after) else ""
        units.append(f"{lead}*{escape_mrkdwn(piece)}*{trail}")
    return units


def _snippet_section(snippet: Snippet) -> str:
    lead = ELLIPSIS if snippet.cut_before else ""
    trail = ELLIPSIS if snippet.cut_after else ""
    body = fit(snippet_units(snippet), SECTION_MAX - slack_len(lead) - slack_len(trail))
    if body.endswith(ELLIPSIS):
        trail = ""
    return lead + body + trail


def _rules_units(rules: Sequence[AlertRule]) -> list[str]:
    pieces = [
        ["`", *mrkdwn_units(r.id), "`", f" v{escape_mrkdwn(short_version(r.version))}"]
        for r in rules
    ]
    return ["Rules: ", *_joined_units(pieces, " · ")]


def _rules_context(alert: Alert) -> str:
    units = _rules_units(alert.rules)
    if alert.first_mentions:
        # `track: LIST`: a list member no alert of these rules has named before.
        units += [" · first mention: ", *_joined_units(
            (mrkdwn_units(m) for m in alert.first_mentions), ", ")]
    return fit(units, SECTION_MAX)


def _sources_context(sources: Sequence[str]) -> str:
    names = _joined_units((mrkdwn_units(s) for s in sources), ", ")
    return fit([f"\u2705 Confirmed by {len(sources)} independent sources: ", *names],
               SECTION_MAX)


def _fallback_text(alert: Alert) -> str:
    severity = alert.severity.value.upper()
    titles = _joined_units((mrkdwn_units(t) for t in rule_titles(alert)), " · ")
    entry_title = mrkdwn_units(alert.entry.title) or ["(untitled)"]
    return fit([f"{severity}: ", *titles, " — ", *entry_title], TEXT_MAX)


def alert_metadata(alert: Alert) -> dict[str, Any]:
    """Message metadata: how the delivery loop finds its own message after a crash.
    https://docs.slack.dev/messaging/message-metadata"""
    key = alert.entry.key
    if slack_len(key) > ENTRY_KEY_MAX:
        key = fit(clusters(key), ENTRY_KEY_MAX)
    return {"event_type": EVENT_TYPE, "event_payload": {"alert_id": alert.id, "entry_key": key}}


def render_slack(alert: Alert, *, sources: Sequence[str] = ()) -> dict[str, Any]:
    """The ``chat.postMessage`` arguments for one alert: ``text``, ``blocks``, ``metadata``.

    ``sources`` (the alert's feed first, then each independent feed that reported the same
    story) adds a "confirmed by" line once there are two: what ``chat.update`` sends.
    """
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _header(alert), "emoji": True}},
        {"type": "section", "text": _mrkdwn(_title_section(alert))},
    ]
    meta = _meta_context(alert)
    if meta:
        blocks.append({"type": "context", "elements": [_mrkdwn(meta)]})
    snippet = make_snippet(alert.entry, alert.hits)
    if snippet is not None:
        blocks.append({"type": "section", "text": _mrkdwn(_snippet_section(snippet))})
    if alert.rules or alert.first_mentions:
        blocks.append({"type": "context", "elements": [_mrkdwn(_rules_context(alert))]})
    text = _fallback_text(alert)
    if len(sources) > 1:
        blocks.append({"type": "context", "elements": [_mrkdwn(_sources_context(sources))]})
        text = fit([text, f" (confirmed by {len(sources)} sources)"], TEXT_MAX)
    return {
        "text": text,
        "blocks": blocks[:MAX_BLOCKS],
        "metadata": alert_metadata(alert),
    }


# --- thread replies, updates and summaries (issue 4) ---------------------------------------


def _message_metadata(kind: str, message_id: int, entry_key: str | None = None
                      ) -> dict[str, Any]:
    payload: dict[str, Any] = {"alert_id": message_id, "kind": kind}
    if entry_key is not None:
        payload["entry_key"] = (fit(clusters(entry_key), ENTRY_KEY_MAX)
                                if slack_len(entry_key) > ENTRY_KEY_MAX else entry_key)
    return {"event_type": EVENT_TYPE, "event_payload": payload}


def _linked_title(title: str, link: str | None, limit: int = TITLE_MAX) -> str:
    label = mrkdwn_units(title) or ["(untitled)"]
    url = slack_url(link)
    if url is None:
        return fit(label, limit)
    return f"<{url}|{fit(label, limit)}>"


def _quoted(text: str, limit: int = 400) -> list[str]:
    return ["\u201c", fit(mrkdwn_units(text), limit), "\u201d"]


def change_lines(change: Change) -> list[list[str]]:
    """What changed, as lines of escaped units: title words, the text, the link."""
    lines: list[list[str]] = []
    if change.title_removed or change.title_added:
        line = ["Title: "]
        if change.title_removed:
            line += ["removed ", *_joined_units(
                (_quoted(w, 200) for w in change.title_removed), ", ")]
        if change.title_added:
            line += ["; " if change.title_removed else "", "added ", *_joined_units(
                (_quoted(w, 200) for w in change.title_added), ", ")]
        lines.append(line)
    if change.text_field and (change.text_removed or change.text_added):
        line = [f"{change.text_field.capitalize()}: "]
        if change.text_removed:
            line += ["removed ", *_quoted(change.text_removed)]
        if change.text_added:
            line += ["; " if change.text_removed else "", "added ", *_quoted(change.text_added)]
        lines.append(line)
    if change.link_changed:
        lines.append(["The link changed."])
    return lines or [["The text changed."]]


def _reply_heading(reply: Reply) -> list[str]:
    feed = fit(mrkdwn_units(reply.feed_name), AUTHOR_MAX)
    if reply.change is not None:
        return ["\u270f\ufe0f *Updated* by ", feed, ": "]
    dup = reply.duplicate
    if dup is not None and not dup.independent:
        return ["\u21aa\ufe0f *Also listed* by ", feed, ": "]
    return ["\u21aa\ufe0f *Also reported* by ", feed, ": "]


def render_reply(reply: Reply) -> dict[str, Any]:
    """A thread reply: another source for the story, or what changed in the entry. Without
    a thread (a webhook), it names the alert it belongs to."""
    entry = reply.entry
    blocks: list[dict[str, Any]] = []
    head = _reply_heading(reply)
    title = _linked_title(entry.title, entry.link)
    blocks.append({"type": "section", "text": _mrkdwn(fit([*head, title], SECTION_MAX))})
    if reply.change is not None:
        body = _joined_units(change_lines(reply.change), "\n")
        blocks.append({"type": "section", "text": _mrkdwn(fit(body, SECTION_MAX))})
    context: list[list[str]] = []
    if entry.author:
        context.append([fit(mrkdwn_units(entry.author), AUTHOR_MAX)])
    when = entry.published or entry.updated
    if when is not None:
        context.append([_slack_date(when)])
    if reply.duplicate is not None:
        how = "same link" if reply.duplicate.reason == "link" else "near-identical title"
        context.append([how])
    if reply.rules:
        context.append(_rules_units(reply.rules))
    if reply.thread is None and reply.parent_title:
        context.append(["re: ", fit(mrkdwn_units(reply.parent_title), TITLE_MAX)])
    if context:
        blocks.append({"type": "context", "elements": [
            _mrkdwn(fit(_joined_units(context, " · "), SECTION_MAX))]})
    verb = "updated" if reply.change is not None else "also reported"
    text = fit([f"{verb} by ", *mrkdwn_units(reply.feed_name), ": ",
                *(mrkdwn_units(entry.title) or ["(untitled)"])], TEXT_MAX)
    return {"text": text, "blocks": blocks,
            "metadata": _message_metadata("reply", reply.id, entry.key)}


def render_update(update: Update) -> dict[str, Any]:
    """The first alert again, now saying which sources confirmed it (for ``chat.update``).
    The metadata stays the alert's own, so that a recovery search still finds it."""
    return render_slack(update.alert, sources=update.sources)


def _summary_line(alert: Alert) -> str:
    rules = _joined_units((["`", *mrkdwn_units(r.id), "`"] for r in alert.rules), " ")
    feed = fit(mrkdwn_units(alert.feed_name), AUTHOR_MAX)
    return fit([f"{SEVERITY_EMOJI[alert.severity]} ",
                _linked_title(alert.entry.title, alert.entry.link, 200),
                " · ", feed, " · ", *rules], 900)


def render_summary(summary: Summary) -> dict[str, Any]:
    """Flood control: one message listing the alerts over the channel's cap, most severe
    first, as many as Slack's limits allow, then how many more."""
    alerts = sorted(summary.alerts, key=lambda a: (-a.severity.rank, a.id))
    count = len(alerts)
    heading = f"\U0001f4cb {count} more alert{'s' if count != 1 else ''} (flood control)"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": heading, "emoji": True}},
    ]
    section: list[str] = []
    shown = 0
    for alert in alerts:
        line = _summary_line(alert)
        if section and slack_len("\n".join([*section, line])) > SECTION_MAX:
            if len(blocks) >= MAX_BLOCKS - 2:
                break
            blocks.append({"type": "section", "text": _mrkdwn("\n".join(section))})
            section = []
        section.append(line)
        shown += 1
    if section:
        blocks.append({"type": "section", "text": _mrkdwn("\n".join(section))})
    note = "Too many alerts for this channel in one cycle; each is listed once here."
    if shown < count:
        note = f"…and {count - shown} more, in `policybot status` and the digest. " + note
    blocks.append({"type": "context", "elements": [_mrkdwn(note)]})
    return {"text": heading, "blocks": blocks[:MAX_BLOCKS],
            "metadata": _message_metadata("summary", summary.id)}


def render_message(message: Message) -> dict[str, Any]:
    """``render_slack`` and friends, by kind."""
    if isinstance(message, Reply):
        return render_reply(message)
    if isinstance(message, Update):
        return render_update(message)
    if isinstance(message, Summary):
        return render_summary(message)
    return render_slack(message)
