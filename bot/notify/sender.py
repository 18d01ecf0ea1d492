"""What every sink has in common: ``send(alert) -> Sent`` or a ``DeliveryError``.

The delivery loop (``bot/notify/delivery.py``) owns retries, pacing and the outbox; a sender
makes exactly one attempt and says how it went.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.model import Alert


@dataclass(frozen=True, slots=True)
class Sent:
    """One alert delivered.

    ``channel`` is where it went: for the bot-token sender the conversation ID that Slack
    answered with (``C0123…``, which ``chat.update`` and ``conversations.history`` need),
    otherwise the alert's channel as routed. ``ts`` is Slack's message timestamp, the
    message's identity within the channel; None when the sink has none (webhook, console).
    """

    channel: str
    ts: str | None


class Sender(Protocol):
    """A sink for alerts. ``send`` raises ``bot.errors.DeliveryError`` when it fails."""

    @property
    def name(self) -> str:
        """``"slack"``, ``"webhook"`` or ``"console"``: recorded with each delivery."""
        ...

    def send(self, alert: Alert) -> Sent: ...
