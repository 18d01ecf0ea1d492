"""``render_text(digest)``, ``render_html(digest)`` and ``compose(...)``: the email. Pure.

The templates are package data (``bot/digest/templates``). HTML is autoescaped and its CSS
inlined with css-inline (mail clients drop ``<style>`` blocks; the ``@media`` rules for
phones and dark mode are kept in place for the clients that honour them). The message is
multipart/alternative, plain text first and HTML last (RFC 2046 §5.1.4: the last part is
the preferred one), built with ``email.policy.SMTP``, whose header folding refuses CR/LF
in a header value.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from functools import cache
from zoneinfo import ZoneInfo

import css_inline
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from bot.digest.build import Digest, plural
from bot.notify.snippet import Snippet, clean_inline

_BLANK_RUN = re.compile(r"\n{3,}")


def local(when: datetime, timezone: str) -> datetime:
    return when.astimezone(ZoneInfo(timezone))


def _when(when: datetime, timezone: str) -> str:
    at = local(when, timezone)
    return f"{at:%a} {at.day} {at:%b} {at:%H:%M}"


def _day(when: datetime, timezone: str) -> str:
    at = local(when, timezone)
    return f"{at:%a} {at.day} {at:%b}"


def _tzname(when: datetime, timezone: str) -> str:
    return local(when, timezone).tzname() or timezone


def _snippet_text(snippet: Snippet) -> str:
    body = "".join(f"*{text}*" if hit else text for text, hit in snippet.parts)
    return ("…" if snippet.cut_before else "") + body + ("…" if snippet.cut_after else "")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _wrap(text: str, width: int, indent: str) -> str:
    # Never break inside a word or a URL; mail clients reflow long CJK lines themselves.
    lines = textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False)
    return ("\n" + indent).join(lines)


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("bot.digest", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(when=_when, day=_day, tzname=_tzname, snippet_text=_snippet_text,
                       wrap=_wrap, plural=plural, sentence=_sentence)
    return env


def _context(digest: Digest) -> dict[str, object]:
    summary = (f"{plural(digest.items, 'item')} in {plural(len(digest.sections), 'topic')}"
               if digest.items else "Nothing matched")
    if digest.first_mentions:
        summary += ", " + plural(len(digest.first_mentions), "first mention")
    return {
        "digest": digest, "tz": digest.timezone, "summary": summary + ".",
        "subject": digest.subject,
        "this_period": "this week" if digest.weekly else "this period",
    }


def render_text(digest: Digest) -> str:
    text = environment().get_template("digest.txt").render(_context(digest))
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return _BLANK_RUN.sub("\n\n", text).strip("\n") + "\n"


def render_html(digest: Digest) -> str:
    html = environment().get_template("digest.html").render(_context(digest))
    return str(css_inline.inline(html, keep_at_rules=True, load_remote_stylesheets=False))


def compose(
    digest: Digest, *, sender: str, recipients: Sequence[str], message_id: str, date: datetime,
    text: str | None = None, html: str | None = None,
) -> EmailMessage:
    """The digest as one multipart/alternative message, ready for SMTP."""
    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = clean_inline(digest.subject).strip()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    # RFC 3834: mail from a program; auto-responders should not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Policybot-Digest"] = f"{digest.name} {digest.period.label}"
    msg.set_content(text if text is not None else render_text(digest), subtype="plain",
                    charset="utf-8")
    msg.add_alternative(html if html is not None else render_html(digest), subtype="html",
                        charset="utf-8")
    return msg
