"""What the outbox delivers besides a top-level alert (``bot.model.Alert``). Pure values.

    Alert    one entry in one channel, naming every rule that matched there
    Reply    a thread reply under an alert: the same story from another source, or what
             changed in the alerted entry
    Update   a ``chat.update`` of an alert: a second independent source confirms its story
    Summary  flood control: one message listing the alerts over a channel's cap

Every kind is one outbox row (``kind``); a reply and an update name the row they belong to
(``parent_id``), and an alert folded into a summary names the summary (``summary_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bot.model import Alert, AlertRule, Entry


class Kind(StrEnum):
    ALERT = "alert"
    REPLY = "reply"
    UPDATE = "update"
    SUMMARY = "summary"


@dataclass(frozen=True, slots=True)
class Posted:
    """Where Slack put a message: the conversation ID it answered with and the message ts."""

    channel: str
    ts: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Why an entry is the same story as an earlier alert.

    ``reason`` is ``"link"`` (same link once tracking parameters and fragments are removed)
    or ``"title"`` (near-identical title within the window). ``independent`` is True when the
    entry comes from another feed on another site: only that confirms a story.
    """

    reason: str
    independent: bool
    first_feed: str


@dataclass(frozen=True, slots=True)
class Change:
    """What changed in an alerted entry: title words removed and added, and a short diff of
    its text (``text_field`` is ``"summary"`` or ``"content"``, None when only the title or
    the link changed)."""

    title_removed: tuple[str, ...] = ()
    title_added: tuple[str, ...] = ()
    text_field: str | None = None
    text_removed: str = ""
    text_added: str = ""
    link_changed: bool = False

    @property
    def empty(self) -> bool:
        return not (self.title_removed or self.title_added or self.text_removed
                    or self.text_added or self.link_changed)


@dataclass(frozen=True, slots=True)
class Reply:
    """A thread reply under alert ``parent_id``. ``thread`` is the parent's message, None when
    the sink cannot thread (webhook, console) or the parent has no ts."""

    id: int
    channel: str
    parent_id: int
    thread: Posted | None
    feed_name: str
    entry: Entry
    rules: tuple[AlertRule, ...]
    parent_title: str = ""
    duplicate: Duplicate | None = None
    change: Change | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Update:
    """Re-render ``alert`` in place, saying which sources reported its story (the alert's own
    feed first). ``target`` is None when the alert went out inside a summary or without a ts:
    there is then nothing to edit."""

    id: int
    channel: str
    alert: Alert
    target: Posted | None
    sources: tuple[str, ...]
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    """The alerts over a channel's cap for one poll cycle (its delivery pass), in one
    message."""

    id: int
    channel: str
    alerts: tuple[Alert, ...]
    created_at: datetime | None = None


Message = Alert | Reply | Update | Summary
