"""Alerts out: render for Slack (pure), send through one of three sinks.

    render_slack(alert) -> {"text", "blocks", "metadata"}      slack_render.py (pure)
    render_message(alert | reply | update | summary)           (bot.messages; pure)
    Sender.send(message) -> Sent | raises DeliveryError         sender.py
      SlackBotSender   bot token: post, thread, chat.update, find  slack.py
      WebhookSender    incoming webhook, at least once           slack.py
      ConsoleSender    Rich panel on the terminal                console.py

The delivery loop (claiming outbox rows, retries, pacing) lives in ``delivery.py``.
"""

from bot.notify.console import ConsoleSender, render_console
from bot.notify.sender import Sender, Sent
from bot.notify.slack import SlackBotSender, WebhookSender
from bot.notify.slack_render import EVENT_TYPE, render_slack

__all__ = [
    "EVENT_TYPE",
    "ConsoleSender",
    "Sender",
    "Sent",
    "SlackBotSender",
    "WebhookSender",
    "render_console",
    "render_slack",
]
