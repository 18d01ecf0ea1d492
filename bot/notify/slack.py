"""Send one alert to Slack: with a bot token (Web API) or an incoming webhook.

A sender makes exactly one attempt and maps Slack's answer to ``Sent`` or a
``DeliveryError`` that says whether trying again can help (``permanent``) and when
(``retry_after``). Retrying, pacing and recording are the delivery loop's job.

Secrets: the bot token and the webhook URL (its path is the credential) never appear in a
``DeliveryError`` or a log line. Messages are built here from Slack's error codes, anything
taken from a third-party exception is redacted, and slack_sdk's own logger is silenced
(at DEBUG it logs the webhook URL with every request).
"""

from __future__ import annotations

import http.client
import logging
import math
import urllib.error
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.webhook import WebhookClient

from bot import __version__
from bot.errors import ConfigError, DeliveryError
from bot.messages import Message, Reply, Update
from bot.notify.sender import Sent
from bot.notify.slack_render import EVENT_TYPE, render_message

log = logging.getLogger(__name__)

# slack_sdk logs every failed request (and, at DEBUG, every request with its URL). We
# translate each failure into a DeliveryError that the delivery loop logs once, so its logger
# stays quiet rather than risk printing a webhook URL.
_SDK_LOG = logging.getLogger("bot.notify.slack_sdk")
_SDK_LOG.setLevel(logging.CRITICAL + 1)
_SDK_LOG.propagate = False

_USER_AGENT_PREFIX = f"policybot/{__version__}"

# Slack error codes (https://docs.slack.dev/reference/methods/chat.postMessage#errors) that
# may succeed later. Any other code is a refusal of this request by this workspace: sending
# the same request again gets the same answer, so it is permanent.
TRANSIENT_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "message_limit_exceeded",
        "fatal_error",
        "internal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",
    }
)

_TOKEN_HINT = "check SLACK_BOT_TOKEN (a bot token, xoxb-…, of an installed app)"
_BUG_HINT = "policybot built a message Slack refuses: please report it with the alert id"
HINTS: Mapping[str, str] = {
    "channel_not_found": (
        "check the channel in the rule's route.slack or POLICYBOT_SLACK_CHANNEL; "
        "a private channel must have the bot invited"
    ),
    "not_in_channel": "invite the bot to the channel (/invite @yourbot)",
    "is_archived": "the channel is archived: unarchive it or route the rule elsewhere",
    "invalid_auth": _TOKEN_HINT,
    "not_authed": _TOKEN_HINT,
    "account_inactive": _TOKEN_HINT,
    "token_revoked": _TOKEN_HINT,
    "token_expired": _TOKEN_HINT,
    "missing_scope": "add the scope to the Slack app and reinstall it",
    "msg_too_long": _BUG_HINT,
    "invalid_blocks": _BUG_HINT,
    "invalid_blocks_format": _BUG_HINT,
    "invalid_metadata_format": _BUG_HINT,
    "invalid_metadata_schema": _BUG_HINT,
    "no_text": _BUG_HINT,
    "restricted_action": "a workspace admin restricts posting in this channel",
}

# chat.update answers that mean "there is no message to edit any more": not worth failing
# the row for, nothing an operator can fix.
UNEDITABLE = ("message_not_found", "cant_update_message", "edit_window_closed")

_WEBHOOK_GONE = (
    "the webhook was removed or its URL is wrong: create a new incoming webhook and set "
    "SLACK_WEBHOOK_URL"
)
WEBHOOK_HINTS: Mapping[str, str] = {
    "no_service": _WEBHOOK_GONE,
    "invalid_token": _WEBHOOK_GONE,
    "no_team": _WEBHOOK_GONE,
    "team_disabled": _WEBHOOK_GONE,
    "channel_is_archived": "the webhook's channel is archived: unarchive it or make a new webhook",
    "channel_not_found": "the webhook's channel is gone: make a new webhook",
    "action_prohibited": "a workspace admin restricts posting in the webhook's channel",
    "posting_to_general_channel_denied": "only admins may post in this channel",
    "invalid_payload": _BUG_HINT,
    "no_text": _BUG_HINT,
}


_WINDOW = 8


@dataclass(frozen=True, slots=True)
class Secrets:
    """What must not leave this module: ``whole`` strings are replaced wherever they occur;
    if any 8-character run of a ``core`` secret is still there (slack_sdk cuts a non-JSON
    body at 100 characters, possibly mid-token), the whole text is withheld."""

    whole: tuple[str, ...] = ()
    core: tuple[str, ...] = ()

    def scrub(self, text: str) -> str:
        for secret in sorted(self.whole, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "[redacted]")
        for secret in self.core:
            runs = (secret[i : i + _WINDOW] for i in range(len(secret) - _WINDOW + 1))
            if any(run in text for run in runs):
                return "[withheld: it quoted part of a credential]"
        return text


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    """Seconds from a ``Retry-After`` header (Slack always sends seconds)."""
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            first = value[0] if isinstance(value, list) and value else value
            try:
                return max(0.0, float(first))
            except (TypeError, ValueError):
                return None
    return None


def _describe_network_error(exc: BaseException) -> str:
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    text = str(reason) or type(reason).__name__
    return f"network error ({type(reason).__name__}): {text}"


def _timeout_seconds(timeout: float) -> int:
    # slack_sdk's clients are typed for whole seconds; round up rather than time out early.
    return max(1, math.ceil(timeout))


def _check_token(token: str) -> str:
    token = token.strip()
    if not token:
        raise ConfigError("SLACK_BOT_TOKEN is empty: set it to the app's bot token (xoxb-…)")
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        # http.client would reject the header and quote the token in its error message.
        raise ConfigError("SLACK_BOT_TOKEN contains spaces or control characters: copy it again")
    return token


# What slack_sdk puts in "error" when the answer was not JSON (web/internal_utils.py).
_NOT_JSON = "Received a response in a non-JSON format"


def classify_api_error(
    method: str,
    status: int,
    data: Mapping[str, Any],
    headers: Mapping[str, Any] | None,
    secrets: Secrets | None = None,
) -> tuple[str, bool, float | None]:
    """(message, permanent, retry_after) for a failed Web API call. Text from the response
    is redacted before it is shortened, so that no part of a secret survives a cut."""
    scrub = (secrets or Secrets()).scrub
    error = scrub(str(data.get("error") or f"HTTP {status}"))[:200]
    if status == 429 or error in ("ratelimited", "rate_limited"):
        after = _retry_after(headers)
        wait = f", retry after {after:g}s" if after is not None else ""
        return f"{method}: rate limited ({error}){wait}", False, after
    if status >= 500 or status == 408 or error.startswith(_NOT_JSON):
        # A body that is not JSON came from something between us and Slack (a proxy,
        # a load balancer) having a bad moment, not from Slack refusing the message.
        return f"{method}: Slack answered HTTP {status} ({error[:100]})", False, None
    permanent = error not in TRANSIENT_ERRORS
    message = f"{method}: {error}"
    if error == "missing_scope" and data.get("needed"):
        message += f" (needs {scrub(str(data.get('needed')))[:200]})"
    details = (data.get("response_metadata") or {}).get("messages") or []
    if details:
        message += " [" + "; ".join(scrub(str(d))[:200] for d in details[:3]) + "]"
    if error in HINTS:
        message += f" — {HINTS[error]}"
    return message, permanent, None


class SlackBotSender:
    """Posts with a bot token through ``chat.postMessage``; the message carries its alert id
    in metadata so that ``find_posted`` can recognise it after a crash."""

    name = "slack"

    def __init__(self, token: str, *, base_url: str | None = None, timeout: float = 10) -> None:
        self._token = _check_token(token)
        # retry_handlers=[]: slack_sdk would otherwise retry failed connections by itself.
        # chat.postMessage has no idempotency key, so a blind retry of a request whose answer
        # was lost may post the alert twice. The outbox owns retries: it retries after
        # checking conversations.history (find_posted) for the message it may already have
        # posted. https://docs.slack.dev/apis/web-api/rate-limits
        self._client = WebClient(
            token=self._token,
            base_url=base_url or WebClient.BASE_URL,
            timeout=_timeout_seconds(timeout),
            retry_handlers=[],
            logger=_SDK_LOG,
            user_agent_prefix=_USER_AGENT_PREFIX,
        )
        # "#name" -> conversation ID, learnt from our own posts and from conversations.list.
        self._channel_ids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"SlackBotSender(base_url={self._client.base_url!r})"

    @contextmanager
    def _translating(self, channel: str, method: str) -> Iterator[None]:
        """Turn slack_sdk and urllib failures into DeliveryError, once, here."""
        secrets = Secrets(whole=(self._token,), core=(self._token,))
        try:
            yield
        except SlackApiError as exc:
            response = exc.response
            data = response.data if isinstance(response.data, dict) else {}
            message, permanent, after = classify_api_error(
                method, int(response.status_code), data, response.headers, secrets
            )
            raise DeliveryError(channel, message, permanent=permanent, retry_after=after) from exc
        except SlackRequestError as exc:
            message = f"{method}: bad request ({exc}); check POLICYBOT_SLACK_API_URL"
            raise DeliveryError(channel, secrets.scrub(message), permanent=True) from exc
        except (OSError, http.client.HTTPException) as exc:
            message = f"{method}: {_describe_network_error(exc)}"
            raise DeliveryError(channel, secrets.scrub(message), permanent=False) from exc

    def send(self, message: Message) -> Sent:
        """Post an alert or a summary; post a reply in its alert's thread; edit the alert an
        update names (``chat.update``, https://docs.slack.dev/reference/methods/chat.update)."""
        if isinstance(message, Update):
            return self._update(message)
        payload = render_message(message)
        channel = message.channel
        thread_ts: str | None = None
        if isinstance(message, Reply) and message.thread is not None:
            channel, thread_ts = message.thread.channel, message.thread.ts
        with self._translating(message.channel, "chat.postMessage"):
            response = self._client.chat_postMessage(
                channel=channel,
                text=payload["text"],
                blocks=payload["blocks"],
                metadata=payload["metadata"],
                thread_ts=thread_ts,
                unfurl_links=False,
                unfurl_media=False,
            )
        channel_id = str(response.get("channel") or channel)
        ts = response.get("ts")
        if channel.startswith("#"):
            self._channel_ids[channel] = channel_id
        log.debug("message %s posted to %s ts=%s", message.id, channel_id, ts)
        return Sent(channel=channel_id, ts=str(ts) if ts else None)

    def _update(self, update: Update) -> Sent:
        if update.target is None:
            return Sent(update.channel, None, note="nothing to edit: the alert went out in a "
                        "summary or without a message id")
        payload = render_message(update)
        try:
            with self._translating(update.channel, "chat.update"):
                response = self._client.chat_update(
                    channel=update.target.channel,
                    ts=update.target.ts,
                    text=payload["text"],
                    blocks=payload["blocks"],
                    metadata=payload["metadata"],
                )
        except DeliveryError as exc:
            if exc.permanent and any(code in exc.message for code in UNEDITABLE):
                # Deleted by someone, or too old to edit: the thread replies still say it.
                return Sent(update.target.channel, None, note=exc.message)
            raise
        return Sent(str(response.get("channel") or update.target.channel),
                    str(response.get("ts") or update.target.ts))

    def find(self, message: Message, oldest: float | None = None) -> Sent | None:
        """Our message for an outbox row, if Slack has it: in the channel's history, or for a
        thread reply in its thread (replies are not in ``conversations.history``)."""
        if isinstance(message, Reply) and message.thread is not None:
            ts = self.find_posted(message.thread.channel, message.id, oldest,
                                  thread_ts=message.thread.ts)
            return Sent(message.thread.channel, ts) if ts else None
        ts = self.find_posted(message.channel, message.id, oldest)
        if ts is None:
            return None
        return Sent(self._channel_ids.get(message.channel, message.channel), ts)

    def find_posted(
        self, channel: str, alert_id: int, oldest: float | None = None, *, max_pages: int = 50,
        thread_ts: str | None = None,
    ) -> str | None:
        """The ts of our message for ``alert_id`` in ``channel`` (a name or an ID), or None.

        Pages ``conversations.history`` (newest first, ``include_all_metadata``) back to
        ``oldest`` (a Unix time; pass the time the alert was first claimed) or ``max_pages``
        pages of 200 messages, whichever comes first. Needs the ``channels:history`` scope
        (``groups:history`` for private channels), and ``channels:read`` to look up a "#name".
        https://docs.slack.dev/reference/methods/conversations.history

        With ``thread_ts`` it pages that thread instead (``conversations.replies``).
        https://docs.slack.dev/reference/methods/conversations.replies
        """
        conversation = self._conversation_id(channel)
        cursor: str | None = None
        method = "conversations.replies" if thread_ts else "conversations.history"
        for _ in range(max_pages):
            with self._translating(channel, method):
                since = f"{oldest:.6f}" if oldest is not None else None
                if thread_ts:
                    response = self._client.conversations_replies(
                        channel=conversation, ts=thread_ts, include_all_metadata=True,
                        oldest=since, cursor=cursor, limit=200)
                else:
                    response = self._client.conversations_history(
                        channel=conversation, include_all_metadata=True, oldest=since,
                        cursor=cursor, limit=200)
            for message in response.get("messages") or []:
                if _is_alert_message(message, alert_id):
                    return str(message["ts"])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return None
        log.warning(
            "alert %s: no message found in the last %d pages of %s", alert_id, max_pages, channel
        )
        return None

    def _conversation_id(self, channel: str) -> str:
        """conversations.history takes an ID only; chat.postMessage also takes "#name"."""
        if not channel.startswith("#"):
            return channel
        if channel in self._channel_ids:
            return self._channel_ids[channel]
        cursor: str | None = None
        for _ in range(100):
            with self._translating(channel, "conversations.list"):
                response = self._client.conversations_list(
                    types="public_channel,private_channel",
                    exclude_archived=True,
                    limit=1000,
                    cursor=cursor,
                )
            for conversation in response.get("channels") or []:
                if conversation.get("name") == channel[1:]:
                    self._channel_ids[channel] = str(conversation["id"])
                    return self._channel_ids[channel]
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        raise DeliveryError(
            channel,
            "conversations.list: no such channel visible to the bot — check the name, invite "
            "the bot to a private channel, or route to the channel ID (C…) instead",
            permanent=True,
        )


def _is_alert_message(message: Mapping[str, Any], alert_id: int) -> bool:
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != EVENT_TYPE:
        return False
    payload = metadata.get("event_payload")
    return isinstance(payload, dict) and str(payload.get("alert_id")) == str(alert_id)


class WebhookSender:
    """Posts through an incoming webhook: one fixed channel, no ts, no threads, no way to
    look a message up afterwards, so delivery is at least once."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 10) -> None:
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                "SLACK_WEBHOOK_URL is not an http(s) URL: copy it from the app's "
                "Incoming Webhooks page (https://hooks.slack.com/services/…)"
            )
        # The whole URL and its path are credentials.
        self._secrets = Secrets(
            whole=(url, parts.path, parts.path.strip("/")),
            core=(parts.path.rstrip("/").rpartition("/")[2],),  # the …/XXXXXXXX secret
        )
        self._client = WebhookClient(
            url,
            timeout=_timeout_seconds(timeout),
            retry_handlers=[],  # the outbox owns retries, see SlackBotSender
            logger=_SDK_LOG,
            user_agent_prefix=_USER_AGENT_PREFIX,
        )

    def __repr__(self) -> str:
        return "WebhookSender(url=[redacted])"

    def send(self, message: Message) -> Sent:
        """Post the message in the webhook's channel. A webhook cannot thread or edit: an
        update is skipped, a duplicate is skipped (a top-level "also reported" would be the
        noise threads exist to avoid), a change goes out naming the alert it changes."""
        if isinstance(message, Update):
            return Sent(message.channel, None, note="webhook: cannot edit messages")
        if isinstance(message, Reply) and message.change is None:
            return Sent(message.channel, None, note="webhook: cannot thread a duplicate")
        channel = message.channel
        payload = render_message(message)
        try:
            response = self._client.send(
                text=payload["text"],
                blocks=payload["blocks"],
                unfurl_links=False,
                unfurl_media=False,
            )
        except (OSError, http.client.HTTPException, SlackRequestError) as exc:
            error = self._secrets.scrub(f"webhook: {_describe_network_error(exc)}")
            # Not chained: urllib/http.client messages can quote the URL (e.g. InvalidURL).
            raise DeliveryError(channel, error, permanent=False) from None
        status = response.status_code
        if 200 <= status < 300:
            return Sent(channel=channel, ts=None)
        body = self._secrets.scrub(" ".join(str(response.body or "").split()))[:100]
        reason = body or f"HTTP {status}"
        if status == 429:
            after = _retry_after(response.headers)
            wait = f", retry after {after:g}s" if after is not None else ""
            raise DeliveryError(
                channel, f"webhook: rate limited{wait}", permanent=False, retry_after=after
            )
        if status >= 500 or status == 408 or status < 400:
            raise DeliveryError(
                channel, f"webhook: HTTP {status} ({reason})", permanent=False
            )
        error = f"webhook: HTTP {status} {reason}"
        if body in WEBHOOK_HINTS:
            error += f" — {WEBHOOK_HINTS[body]}"
        raise DeliveryError(channel, error, permanent=True)
