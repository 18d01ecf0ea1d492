"""Print an alert with Rich: the sink when neither a bot token nor a webhook is configured.

Feed text is put into ``rich.text.Text`` objects and never parsed as Rich markup, so a title
like ``[bold red]…[/]`` or ``:warning:`` prints as written; control characters (terminal
escape sequences) are dropped by ``clean_inline``.
"""

from __future__ import annotations

from datetime import UTC

from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from bot.messages import Message, Reply, Summary, Update
from bot.model import Alert, Severity
from bot.notify.sender import Sent
from bot.notify.slack_render import (
    alert_time,
    change_lines,
    rule_titles,
    short_version,
    slack_url,
)
from bot.notify.snippet import clean_inline, make_snippet

SEVERITY_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "bold yellow",
    Severity.LOW: "bold blue",
}
BORDER_STYLE = {
    Severity.CRITICAL: "red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "blue",
}
HIT_STYLE = "bold reverse"


def _line(text: str, style: str = "") -> Text:
    return Text(clean_inline(text).strip(), style=style)


def render_console(message: Message) -> Panel:
    """The message as a Rich panel, with what its Slack form says. Pure: prints nothing."""
    if isinstance(message, Reply):
        return _reply_panel(message)
    if isinstance(message, Update):
        return _alert_panel(message.alert, sources=message.sources)
    if isinstance(message, Summary):
        return _summary_panel(message)
    return _alert_panel(message)


def _alert_panel(alert: Alert, sources: tuple[str, ...] = ()) -> Panel:
    entry = alert.entry
    severity = alert.severity
    title = Text(severity.value.upper(), style=SEVERITY_STYLE[severity])
    title.append(" · " + clean_inline(" · ".join(rule_titles(alert))).strip(), style="bold")

    lines: list[Text] = [_line(entry.title or "(untitled)", "bold")]
    if slack_url(entry.link) is not None and entry.link:
        lines.append(_line(entry.link, "underline cyan"))
    meta = [clean_inline(alert.feed_name).strip()]
    if entry.author:
        meta.append(clean_inline(entry.author).strip())
    when = alert_time(alert)
    if when is not None:
        aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        meta.append(aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    lines.append(Text(" · ".join(m for m in meta if m), style="dim"))

    snippet = make_snippet(entry, alert.hits)
    if snippet is not None:
        body = Text("…" if snippet.cut_before else "")
        for piece, is_hit in snippet.parts:
            body.append(piece, style=HIT_STYLE if is_hit else "")
        if snippet.cut_after:
            body.append("…")
        lines.append(Text())
        lines.append(body)

    rules = ", ".join(f"{r.id} v{short_version(r.version)}" for r in alert.rules)
    if alert.first_mentions:
        rules += " · first mention: " + ", ".join(alert.first_mentions)
    lines.append(Text())
    lines.append(_line(f"rules: {rules}", "dim"))
    if len(sources) > 1:
        lines.append(_line(f"confirmed by {len(sources)} independent sources: "
                           + ", ".join(sources), "green"))
    return Panel(
        Group(*lines),
        title=title,
        title_align="left",
        subtitle=Text(f"alert {alert.id} → {clean_inline(alert.channel).strip()}", style="dim"),
        subtitle_align="right",
        border_style=BORDER_STYLE[severity],
    )


def _reply_panel(reply: Reply) -> Panel:
    entry = reply.entry
    if reply.change is not None:
        heading = f"updated by {reply.feed_name}"
    elif reply.duplicate is not None and not reply.duplicate.independent:
        heading = f"also listed by {reply.feed_name}"
    else:
        heading = f"also reported by {reply.feed_name}"
    lines: list[Text] = [_line(entry.title or "(untitled)", "bold")]
    if slack_url(entry.link) is not None and entry.link:
        lines.append(_line(entry.link, "underline cyan"))
    if reply.change is not None:
        for units in change_lines(reply.change):
            # change_lines escapes for Slack; the terminal wants the words as written.
            text = "".join(units).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
            lines.append(_line(text))
    if reply.parent_title:
        lines.append(_line(f"re: {reply.parent_title}", "dim"))
    return Panel(Group(*lines), title=_line(heading, "bold"), title_align="left",
                 subtitle=Text(f"reply {reply.id} → alert {reply.parent_id}", style="dim"),
                 subtitle_align="right", border_style="dim")


def _summary_panel(summary: Summary) -> Panel:
    alerts = sorted(summary.alerts, key=lambda a: (-a.severity.rank, a.id))
    lines = []
    for alert in alerts:
        line = Text(f"{alert.severity.value.upper():8} ", style=SEVERITY_STYLE[alert.severity])
        line.append(clean_inline(alert.entry.title or "(untitled)").strip())
        line.append(f"  · {clean_inline(alert.feed_name).strip()} · "
                    + ", ".join(r.id for r in alert.rules), style="dim")
        lines.append(line)
    count = len(alerts)
    return Panel(Group(*lines), title=Text(f"{count} more alerts (flood control)", style="bold"),
                 title_align="left", subtitle=Text(f"summary {summary.id} → "
                 f"{clean_inline(summary.channel).strip()}", style="dim"),
                 subtitle_align="right", border_style="dim")


class ConsoleSender:
    """Prints each message; never fails. ``Sent.ts`` is None."""

    name = "console"

    def __init__(self, console: Console | None = None) -> None:
        self._console = console if console is not None else Console()

    def send(self, message: Message) -> Sent:
        self._console.print(render_console(message))
        return Sent(channel=message.channel, ts=None)
