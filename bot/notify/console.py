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

from bot.model import Alert, Severity
from bot.notify.sender import Sent
from bot.notify.slack_render import alert_time, rule_titles, short_version, slack_url
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


def render_console(alert: Alert) -> Panel:
    """The alert as a Rich panel. Pure: builds renderables, prints nothing."""
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
    lines.append(Text())
    lines.append(_line(f"rules: {rules}", "dim"))
    return Panel(
        Group(*lines),
        title=title,
        title_align="left",
        subtitle=Text(f"alert {alert.id} → {clean_inline(alert.channel).strip()}", style="dim"),
        subtitle_align="right",
        border_style=BORDER_STYLE[severity],
    )


class ConsoleSender:
    """Prints each alert; never fails. ``Sent.ts`` is None."""

    name = "console"

    def __init__(self, console: Console | None = None) -> None:
        self._console = console if console is not None else Console()

    def send(self, alert: Alert) -> Sent:
        self._console.print(render_console(alert))
        return Sent(channel=alert.channel, ts=None)
