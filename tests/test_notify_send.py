"""The senders against a fake Slack over loopback, driven by the real slack_sdk clients."""

from __future__ import annotations

import json
import logging
import re
import socket

import pytest
from fakeslack import DEFAULT_TOKEN, WEBHOOK_PATH, FakeSlack, make_alert
from fakeslack import hit as hit_in

from bot.errors import ConfigError, DeliveryError
from bot.notify import SlackBotSender, WebhookSender, render_slack
from bot.notify.sender import Sender

HOSTILE_TITLES = [
    "<!channel> urgent",
    "<!here>",
    "<!everyone>",
    "<@U123> look",
    "<!subteam^S1>",
    "<https://x|label>",
    "a|b>",
    "&amp;",
]
LINK = "https://www.mofa.go.jp/press/release/osa-philippines.html"
DATE_TOKEN = re.compile(r"<!date\^\d+\^\{date_short_pretty\} \{time\}\|[0-9: UTC-]+>")


@pytest.fixture
def bot(fake_slack: FakeSlack) -> SlackBotSender:
    return SlackBotSender(fake_slack.token, base_url=fake_slack.base_url, timeout=5)


@pytest.fixture
def webhook(fake_slack: FakeSlack) -> WebhookSender:
    return WebhookSender(fake_slack.webhook_url, timeout=5)


def delivery_error(sender: Sender, **alert_args: object) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        sender.send(make_alert(**alert_args))  # type: ignore[arg-type]
    return info.value


# --- bot token: posting ------------------------------------------------------------------


def test_an_alert_is_posted_with_blocks_metadata_and_no_unfurling(
    bot: SlackBotSender, fake_slack: FakeSlack
) -> None:
    alert = make_alert()

    sent = bot.send(alert)

    [post] = fake_slack.posts
    payload = render_slack(alert)
    assert (post.channel, post.text, post.blocks) == (
        alert.channel,
        payload["text"],
        payload["blocks"],
    )
    assert post.metadata == payload["metadata"]
    assert sent.ts == post.ts and sent.channel == alert.channel
    body = json.loads(post.raw)
    assert body["unfurl_links"] is False and body["unfurl_media"] is False
    assert "link_names" not in body and "parse" not in body
    [request] = fake_slack.calls("chat.postMessage")
    assert request.headers["Authorization"] == f"Bearer {fake_slack.token}"


def test_sent_names_the_conversation_id_slack_answered_with(
    bot: SlackBotSender, fake_slack: FakeSlack
) -> None:
    fake_slack.set_channels({"#japan-defence": "C0JAPAN"})

    sent = bot.send(make_alert(channel="#japan-defence"))

    assert sent.channel == "C0JAPAN"
    assert fake_slack.posts[0].channel == "C0JAPAN"


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_hostile_feed_text_reaches_slack_inert(
    bot: SlackBotSender, fake_slack: FakeSlack, title: str
) -> None:
    summary = f"Intro {title} and more"
    bot.send(make_alert(title=title, summary=summary, author=title, hits=[hit_in(summary, title)]))
    bot.send(make_alert(title=title, link="javascript:alert(1)", summary=summary))

    first, second = fake_slack.posts
    for post in (first, second):
        # The request body exactly as it arrived, less our own date tokens.
        raw = DATE_TOKEN.sub("", post.raw)
        assert "<!" not in raw and "<@" not in raw and "<#" not in raw
        assert all(seq.startswith(f"<{LINK}|") for seq in re.findall(r"<[^>]*>", raw))
    assert f"<{LINK}|" in first.raw
    assert "<javascript" not in second.raw and "<" not in second.blocks[1]["text"]["text"]  # type: ignore[index]


def test_a_10000_character_cjk_title_is_accepted_by_slack(
    bot: SlackBotSender, fake_slack: FakeSlack
) -> None:
    title = ("日本の安全保障🇯🇵👩\u200d💻" * 1000)[:10_000]

    bot.send(make_alert(title=title, summary=title))

    assert len(fake_slack.posts) == 1  # the fake refuses blocks over Slack's limits


# --- bot token: failures -----------------------------------------------------------------


def test_a_429_is_transient_with_retry_after(bot: SlackBotSender, fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=2)

    err = delivery_error(bot)

    assert err.permanent is False
    assert err.retry_after == 2.0
    assert "rate limited" in err.message
    assert fake_slack.posts == []
    bot.send(make_alert())  # the next attempt goes through: no retry was made behind our back
    assert len(fake_slack.calls("chat.postMessage")) == 2


def test_a_500_is_transient(bot: SlackBotSender, fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("chat.postMessage", status=500)

    err = delivery_error(bot)

    assert (err.permanent, err.retry_after) == (False, None)
    assert "HTTP 500" in err.message
    assert len(fake_slack.calls("chat.postMessage")) == 1  # slack_sdk did not retry


def test_an_answer_that_is_not_json_is_transient(
    bot: SlackBotSender, fake_slack: FakeSlack
) -> None:
    fake_slack.fail_next("chat.postMessage", status=200, body="<html>proxy login</html>")

    err = delivery_error(bot)

    assert err.permanent is False and "non-JSON" in err.message


@pytest.mark.parametrize("error", ["internal_error", "fatal_error", "service_unavailable"])
def test_slack_errors_that_may_pass_are_transient(
    bot: SlackBotSender, fake_slack: FakeSlack, error: str
) -> None:
    fake_slack.fail_next("chat.postMessage", error=error)

    assert delivery_error(bot).permanent is False


def test_a_dropped_connection_is_transient(bot: SlackBotSender, fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("chat.postMessage", disconnect=True)

    err = delivery_error(bot)

    assert err.permanent is False
    assert "network error" in err.message
    assert len(fake_slack.calls("chat.postMessage")) == 1  # not retried: it may have posted


def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = SlackBotSender(DEFAULT_TOKEN, base_url=f"http://127.0.0.1:{port}/api/", timeout=5)

    err = delivery_error(sender)

    assert err.permanent is False and "network error" in err.message
    assert DEFAULT_TOKEN not in str(err)


def test_an_unknown_channel_is_permanent_with_the_reason(
    bot: SlackBotSender, fake_slack: FakeSlack
) -> None:
    fake_slack.set_channels({"#japan-defence": "C0JAPAN"})

    err = delivery_error(bot, channel="#no-such-channel")

    assert err.permanent is True
    assert err.channel == "#no-such-channel"
    assert "channel_not_found" in err.message
    assert "route.slack" in err.message  # says how to fix it


@pytest.mark.parametrize(
    "error",
    [
        "not_in_channel",
        "is_archived",
        "account_inactive",
        "token_revoked",
        "msg_too_long",
        "invalid_blocks",
        "some_future_error",
    ],
)
def test_refusals_are_permanent(bot: SlackBotSender, fake_slack: FakeSlack, error: str) -> None:
    fake_slack.fail_next("chat.postMessage", error=error)

    err = delivery_error(bot)

    assert err.permanent is True and error in err.message


def test_a_wrong_token_is_permanent_and_never_quoted(
    fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "xoxb-wrong-token-9876543210"
    sender = SlackBotSender(token, base_url=fake_slack.base_url)

    err = delivery_error(sender)

    assert err.permanent is True and "invalid_auth" in err.message
    assert "SLACK_BOT_TOKEN" in err.message
    assert token not in str(err) and token not in repr(err) and token not in err.message
    assert token not in caplog.text
    assert token not in repr(sender)


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 429, "retry_after": 1},
        {"status": 500},
        {"status": 502, "body": f"bad gateway for {DEFAULT_TOKEN}"},
        {"status": 502, "body": "x" * 50 + DEFAULT_TOKEN},  # a cut must not leave half of it
        {"status": 502, "body": "x" * 90 + DEFAULT_TOKEN},  # slack_sdk cuts at 100 characters
        {"error": "channel_not_found"},
        {"disconnect": True},
    ],
)
def test_the_token_is_never_in_an_error_or_a_log_line(
    bot: SlackBotSender,
    fake_slack: FakeSlack,
    caplog: pytest.LogCaptureFixture,
    failure: dict[str, object],
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_slack.fail_next("chat.postMessage", **failure)  # type: ignore[arg-type]

    err = delivery_error(bot)

    token = fake_slack.token
    assert not any(token[i : i + 8] in str(err) for i in range(len(token) - 7))
    assert token not in caplog.text


def test_an_empty_or_mangled_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN is empty"):
        SlackBotSender("  ")
    with pytest.raises(ConfigError, match="control characters") as info:
        SlackBotSender("xoxb-abc\ndef")
    assert "xoxb-abc" not in str(info.value)


# --- bot token: finding our own message after a crash ------------------------------------


def test_find_posted_finds_the_alert_across_two_pages(fake_slack: FakeSlack) -> None:
    fake = fake_slack
    fake.history_page_size = 2
    fake.set_channels({"#japan-defence": "C0JAPAN"})
    sender = SlackBotSender(fake.token, base_url=fake.base_url)
    target = sender.send(make_alert(id=7))
    for other in (8, 9, 10):
        sender.send(make_alert(id=other))
    fake.add_message(
        "C0JAPAN",
        "someone else",
        metadata={"event_type": "other", "event_payload": {"alert_id": 7}},
    )

    found = SlackBotSender(fake.token, base_url=fake.base_url).find_posted("#japan-defence", 7)

    assert found == target.ts
    pages = fake.calls("conversations.history")
    assert len(pages) == 3  # newest first: [other, 10], [9, 8], [7, …]
    assert pages[0].params["channel"] == "C0JAPAN"  # "#name" resolved via conversations.list
    assert pages[0].params["include_all_metadata"] == "1"
    assert [p.params.get("cursor") for p in pages] == [None, "2", "4"]


def test_find_posted_returns_none_when_the_alert_was_never_posted(
    bot: SlackBotSender, fake_slack: FakeSlack
) -> None:
    fake_slack.history_page_size = 1
    bot.send(make_alert(id=1, channel="C1"))
    bot.send(make_alert(id=2, channel="C1"))
    bot.send(make_alert(id=3, channel="C2"))

    assert bot.find_posted("C1", 3) is None
    assert len(fake_slack.calls("conversations.history")) == 2


def test_find_posted_looks_no_further_back_than_oldest(
    bot: SlackBotSender, fake_slack: FakeSlack
) -> None:
    old = bot.send(make_alert(id=5, channel="C1"))
    assert old.ts is not None

    assert bot.find_posted("C1", 5, oldest=float(old.ts)) is None
    assert bot.find_posted("C1", 5, oldest=float(old.ts) - 1) == old.ts
    assert fake_slack.calls("conversations.history")[0].params["oldest"] == f"{float(old.ts):.6f}"


def test_find_posted_raises_delivery_error_when_history_fails(
    bot: SlackBotSender, fake_slack: FakeSlack
) -> None:
    fake_slack.fail_next("conversations.history", error="missing_scope")

    with pytest.raises(DeliveryError) as info:
        bot.find_posted("C1", 1)

    assert info.value.permanent is True and "missing_scope" in info.value.message


def test_find_posted_with_an_unknown_channel_name_is_permanent(
    bot: SlackBotSender, fake_slack: FakeSlack
) -> None:
    fake_slack.set_channels({"#japan-defence": "C0JAPAN"})

    with pytest.raises(DeliveryError) as info:
        bot.find_posted("#elsewhere", 1)

    assert info.value.permanent is True and "channel ID" in info.value.message


# --- incoming webhook --------------------------------------------------------------------


def test_a_webhook_posts_text_and_blocks(webhook: WebhookSender, fake_slack: FakeSlack) -> None:
    alert = make_alert()

    sent = webhook.send(alert)

    assert (sent.channel, sent.ts) == (alert.channel, None)
    [post] = fake_slack.posts
    payload = render_slack(alert)
    assert (post.via, post.text, post.blocks) == ("webhook", payload["text"], payload["blocks"])
    assert "link_names" not in json.loads(post.raw)


def test_a_webhook_429_is_transient_with_retry_after(
    webhook: WebhookSender, fake_slack: FakeSlack
) -> None:
    fake_slack.fail_next("webhook", status=429, retry_after=30)

    err = delivery_error(webhook)

    assert (err.permanent, err.retry_after) == (False, 30.0)


def test_a_webhook_500_is_transient(webhook: WebhookSender, fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("webhook", status=503)

    err = delivery_error(webhook)

    assert (err.permanent, err.retry_after) == (False, None)
    assert len(fake_slack.calls("webhook")) == 1


@pytest.mark.parametrize(
    ("status", "error", "hint"),
    [
        (404, "no_service", "SLACK_WEBHOOK_URL"),
        (403, "action_prohibited", "admin"),
        (410, "channel_is_archived", "archived"),
        (400, "invalid_payload", "report"),
    ],
)
def test_webhook_refusals_are_permanent_with_the_reason(
    webhook: WebhookSender, fake_slack: FakeSlack, status: int, error: str, hint: str
) -> None:
    fake_slack.fail_next("webhook", status=status, error=error)

    err = delivery_error(webhook)

    assert err.permanent is True
    assert f"HTTP {status} {error}" in err.message and hint in err.message


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 404, "error": "no_service"},
        {"status": 500, "body": "upstream failed for " + WEBHOOK_PATH},
        {"status": 500, "body": "x" * 90 + WEBHOOK_PATH},
        {"status": 429},
        {"disconnect": True},
    ],
)
def test_the_webhook_url_is_never_in_an_error_or_a_log_line(
    webhook: WebhookSender,
    fake_slack: FakeSlack,
    caplog: pytest.LogCaptureFixture,
    failure: dict[str, object],
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_slack.fail_next("webhook", **failure)  # type: ignore[arg-type]

    err = delivery_error(webhook)

    for secret in (fake_slack.webhook_url, WEBHOOK_PATH, WEBHOOK_PATH[1:], "fakeWebhookSecret"):
        assert secret not in str(err)
        assert secret not in caplog.text
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert "fakeWebhookSecret" not in repr(webhook)


def test_a_webhook_network_error_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T000/B000/SECRETSECRET"

    err = delivery_error(WebhookSender(url, timeout=5))

    assert err.permanent is False
    assert "SECRETSECRET" not in str(err)


def test_a_webhook_url_that_is_not_http_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SLACK_WEBHOOK_URL") as info:
        WebhookSender("hooks.slack.com/services/T/B/SECRET")
    assert "SECRET" not in str(info.value)


def test_senders_name_themselves() -> None:
    assert SlackBotSender("xoxb-1").name == "slack"
    assert WebhookSender("https://hooks.slack.com/services/T/B/X").name == "webhook"


# --- the fake itself ---------------------------------------------------------------------


def test_the_fake_answers_auth_test_and_chat_update(fake_slack: FakeSlack) -> None:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    client = WebClient(token=fake_slack.token, base_url=fake_slack.base_url, retry_handlers=[])
    assert client.auth_test()["bot_id"] == "B0BOT"
    posted = client.chat_postMessage(channel="C1", text="first", thread_ts="1.000001")
    client.chat_update(channel="C1", ts=posted["ts"], text="edited")

    [post] = fake_slack.posts
    assert (post.text, post.thread_ts) == ("edited", "1.000001")
    assert fake_slack.updates[0]["text"] == "edited"
    with pytest.raises(SlackApiError, match="message_not_found"):
        client.chat_update(channel="C1", ts="9.9", text="x")
    with pytest.raises(SlackApiError, match="not_authed"):
        WebClient(base_url=fake_slack.base_url, retry_handlers=[]).auth_test()
