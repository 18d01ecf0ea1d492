"""What every sink has in common: ``send(message) -> Sent`` or a ``DeliveryError``.

The delivery loop (``bot/notify/delivery.py``) owns retries, pacing and the outbox; a sender
makes exactly one attempt and says how it went.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.messages import Message


@dataclass(frozen=True, slots=True)
class Sent:
    """One alert delivered.

    ``channel`` is where it went: for the bot-token sender the conversation ID that Slack
    answered with (``C0123…``, which ``chat.update`` and ``conversations.history`` need),
    otherwise the alert's channel as routed. ``ts`` is Slack's message timestamp, the
    message's identity within the channel; None when the sink has none (webhook, console).
    ``note`` says why nothing was posted when a sink skips a message it cannot show (an
    update without a message to edit, a duplicate on a webhook that cannot thread).
    """

    channel: str
    ts: str | None
    note: str | None = None


class Sender(Protocol):
    """A sink for outbox messages (alerts, thread replies, updates, summaries). ``send``
    raises ``bot.errors.DeliveryError`` when it fails."""

    @property
    def name(self) -> str:
        """``"slack"``, ``"webhook"`` or ``"console"``: recorded with each delivery."""
        ...

    def send(self, message: Message) -> Sent: ...
