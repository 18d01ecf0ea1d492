"""Feed health for operators: one message to the ops channel when a feed goes bad (stale,
silent, gone) and one when it recovers.

    health_changes(feeds, now, stale_after) -> [HealthChange]   pure: what to announce
    render_ops(change) -> {"text", "blocks"}                    pure: the Slack message
    OpsAnnouncer.announce()                                     posts, then records

The state announced is recorded on the feed row (``feeds.announced_state``) after the post
succeeds, so each change is told once; a post that fails is tried again after the next
cycle. Without ``POLICYBOT_SLACK_OPS_CHANNEL`` (or without a bot token, since an incoming
webhook cannot choose its channel) the same lines go to the log at WARNING, once each.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError

from bot.errors import DeliveryError
from bot.notify.slack_render import fit, mrkdwn_units, plain_units, slack_url
from bot.schedule import HealthFacts, assess
from bot.store import FeedState, Store

log = logging.getLogger(__name__)

RECOVERED = "recovered"
_ICON = {"stale": ":warning:", "silent": ":zzz:", "gone": ":no_entry:",
         RECOVERED: ":white_check_mark:"}
_HEADLINE = {
    "stale": "is failing",
    "silent": "has gone quiet",
    "gone": "is gone (410)",
    RECOVERED: "has recovered",
}


class _Announceable(HealthFacts, Protocol):
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def announced_state(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A feed whose health differs from what the ops channel was last told."""

    feed_id: int
    feed: str
    url: str
    state: str  # stale | silent | gone | recovered
    reason: str = ""
    last_error: str | None = None

    @property
    def recorded(self) -> str | None:
        """What ``feeds.announced_state`` becomes once this is told."""
        return None if self.state == RECOVERED else self.state


def health_changes(
    feeds: Iterable[_Announceable], now: datetime, *, stale_after: timedelta
) -> list[HealthChange]:
    """The changes to announce: a feed newly in a bad state (or in another bad state than
    the one announced), or a feed announced bad that is healthy again. A feed that is
    removed or disabled is no one's alarm any more: its announcement is simply cleared."""
    changes = []
    for feed in feeds:
        health = assess(feed, now, stale_after=stale_after)
        if health.bad and health.state != feed.announced_state:
            changes.append(HealthChange(feed.id, feed.name, feed.url, health.state,
                                        health.reason, feed.last_error))
        elif not health.bad and feed.announced_state is not None:
            quiet = health.state in ("removed", "disabled")
            changes.append(HealthChange(feed.id, feed.name, feed.url,
                                        "cleared" if quiet else RECOVERED,
                                        f"was {feed.announced_state}"))
    return changes


def render_ops(change: HealthChange) -> dict[str, Any]:
    """The message for one change: a plain ``text`` fallback and Block Kit blocks. Feed
    names, URLs and errors are escaped (they may come from a hostile server)."""
    headline = _HEADLINE.get(change.state, change.state)
    name = fit(mrkdwn_units(change.feed), 200)
    link = slack_url(change.url)
    where = f"<{link}|{fit(mrkdwn_units(change.url), 300)}>" if link else fit(
        mrkdwn_units(change.url), 300)
    lines = [f"{_ICON.get(change.state, '')} Feed *{name}* {headline}".strip(), where]
    if change.reason:
        lines.append(fit(mrkdwn_units(change.reason), 500))
    if change.last_error and change.state != RECOVERED:
        lines.append("Last error: " + fit(mrkdwn_units(change.last_error), 1000))
    if change.state == "gone":
        lines.append("It is no longer polled; fix or remove it in feeds.yaml.")
    elif change.state != RECOVERED:
        lines.append("Check it with `policybot feeds check URL`.")
    text = fit(plain_units(f"Feed {change.feed} {headline}: {change.reason or change.url}"),
               1000)
    return {"text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}]}


Post = Callable[[dict[str, Any]], None]


def slack_poster(token: str, channel: str, *, base_url: str | None = None) -> Post:
    """Post ops messages with the bot token; failures become a DeliveryError."""
    client = WebClient(token=token, base_url=base_url or WebClient.BASE_URL, timeout=10,
                       retry_handlers=[])

    def post(payload: dict[str, Any]) -> None:
        try:
            client.chat_postMessage(channel=channel, text=payload["text"],
                                    blocks=payload["blocks"], unfurl_links=False,
                                    unfurl_media=False)
        except SlackApiError as exc:
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            raise DeliveryError(channel, f"chat.postMessage: {error or 'refused'}",
                                permanent=False) from exc
        except (SlackRequestError, OSError, http.client.HTTPException) as exc:
            raise DeliveryError(channel, f"chat.postMessage: {type(exc).__name__}",
                                permanent=False) from exc

    return post


@dataclass
class OpsAnnouncer:
    """Tells the ops channel (or the log) about feed health changes, once each."""

    store: Store
    post: Post | None
    clock: Callable[[], datetime]
    stale_after: timedelta = timedelta(hours=48)

    def announce(self) -> list[HealthChange]:
        """Announce every pending change; returns those told (and recorded)."""
        now = self.clock()
        feeds: Sequence[FeedState] = self.store.list_feeds()
        told = []
        for change in health_changes(feeds, now, stale_after=self.stale_after):
            if change.state != "cleared":
                payload = render_ops(change)
                if self.post is None:
                    log.warning("feed health: %s", payload["text"])
                else:
                    try:
                        self.post(payload)
                    except DeliveryError as exc:
                        log.warning("ops channel: could not announce feed=%s %s: %s",
                                    change.feed, change.state, exc.message)
                        continue
                told.append(change)
            self.store.record_announcement(change.feed_id, change.recorded, now)
        return told
