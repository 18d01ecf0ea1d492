"""A fake Slack Web API and incoming webhook, served over HTTP on 127.0.0.1 for the real
``slack_sdk`` clients to talk to.

    with FakeSlack.running() as fake:
        sender = SlackBotSender(fake.token, base_url=fake.base_url)
        fake.set_channels({"#japan-defence": "C0JAPAN"})
        fake.fail_next("chat.postMessage", status=429, retry_after=2)
        ...
        assert fake.posts[0].channel == "C0JAPAN"

Methods: ``chat.postMessage`` (threads with ``thread_ts``), ``chat.update``,
``conversations.history`` (top-level messages only, as Slack's; metadata, cursor paging),
``conversations.replies``, ``conversations.list``, ``auth.test``; and the incoming webhook
(``POST /services/T…/B…/…``). Bodies are read
as slack_sdk sends them (JSON for messages, form-encoded for the rest); the Bearer token is
checked. Like Slack, it refuses oversized blocks with ``invalid_blocks``, so the renderer's
limits are tested against the same rules.

Every request is handled before the client's call returns, so tests read ``posts`` and
``requests`` right after a call, without waiting.

``hold_next("chat.postMessage")`` makes the next post wait, recorded but unanswered, until
``release()``: the window in which a crash leaves Slack with a message the bot has not
recorded. ``hold.wait_held()`` blocks the test until a post is held there.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from bot.model import Alert, AlertRule, Entry, Hit, Severity

DEFAULT_TOKEN = "xoxb-fake-0123456789-SECRET"
WEBHOOK_PATH = "/services/T0FAKE/B0FAKE/fakeWebhookSecret24chars"
WEBHOOK_METHOD = "webhook"


@dataclass
class Post:
    """A message the fake accepted (chat.postMessage or the webhook)."""

    channel: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    metadata: dict[str, Any] | None
    thread_ts: str | None
    ts: str
    time: float
    raw: str  # the request body exactly as received
    via: str = "api"  # "api" or "webhook"


@dataclass
class Request:
    method: str
    headers: dict[str, str]
    params: dict[str, Any]
    raw: str


@dataclass
class Failure:
    status: int = 200
    error: str | None = None
    retry_after: float | None = None
    body: str | None = None
    disconnect: bool = False


class Hold:
    """A post that Slack has accepted and recorded but not yet answered."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout  # a safety limit, so that a failing test cannot hang
        self.held = threading.Event()
        self.released = threading.Event()

    def wait_held(self, timeout: float = 60.0) -> bool:
        return self.held.wait(timeout)

    def release(self) -> None:
        self.released.set()


@dataclass
class _State:
    posts: list[Post] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, deque[Failure]] = field(default_factory=lambda: defaultdict(deque))
    channels: dict[str, str] | None = None  # name or ID -> ID; None accepts any channel
    seq: int = 0
    holds: dict[str, deque[Hold]] = field(default_factory=lambda: defaultdict(deque))


class FakeSlack:
    # Slack's own limits, https://docs.slack.dev/reference/block-kit/blocks
    HEADER_MAX = 150
    TEXT_MAX = 3000
    BLOCKS_MAX = 50

    def __init__(self, token: str = DEFAULT_TOKEN, *, history_page_size: int = 100) -> None:
        self.token = token
        self.history_page_size = history_page_size
        # ts values count up from the real time, one per post, as Slack's do.
        self.start_time = int(time.time())
        self._lock = threading.Lock()
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    @classmethod
    @contextmanager
    def running(cls, token: str = DEFAULT_TOKEN, **kwargs: Any) -> Iterator[FakeSlack]:
        fake = cls(token, **kwargs)
        fake.start()
        try:
            yield fake
        finally:
            fake.stop()

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval only makes shutdown() prompt; requests never wait on it.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    # --- script ------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: float | None = None,
        body: str | None = None,
        disconnect: bool = False,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls of ``method`` ("chat.postMessage", "webhook", …) fail:
        with ``status`` (429 adds Retry-After), with ``{"ok": false, "error": error}``, with a
        raw ``body``, or by closing the connection without an answer (``disconnect``)."""
        with self._lock:
            for _ in range(times):
                self._state.failures[method].append(
                    Failure(status, error, retry_after, body, disconnect)
                )

    def hold_next(self, method: str = "chat.postMessage") -> Hold:
        """The next successful ``method`` call is recorded, then left unanswered until
        ``release()`` on the returned hold."""
        hold = Hold()
        with self._lock:
            self._state.holds[method].append(hold)
        return hold

    def thread(self, ts: str) -> list[Post]:
        """The replies posted in the thread of message ``ts``, oldest first."""
        return [p for p in self.posts if p.thread_ts == ts]

    def top_level(self, channel: str | None = None) -> list[Post]:
        return [p for p in self.posts if p.thread_ts is None
                and (channel is None or p.channel == channel)]

    def set_channels(self, channels: Mapping[str, str] | Iterable[str]) -> None:
        """Known channels: a mapping "#name" -> ID, or IDs. Others get channel_not_found."""
        known: dict[str, str] = {}
        items = channels.items() if isinstance(channels, Mapping) else ((c, c) for c in channels)
        for name, cid in items:
            known[name] = cid
            known[cid] = cid
        with self._lock:
            self._state.channels = known

    def add_message(
        self, channel: str, text: str, *, metadata: dict[str, Any] | None = None
    ) -> str:
        """Put a message in a channel's history as if someone else had posted it."""
        with self._lock:
            return self._record(channel, text, None, metadata, None, raw="", via="other").ts

    # --- what happened ------------------------------------------------------------------

    @property
    def posts(self) -> list[Post]:
        with self._lock:
            return [p for p in self._state.posts if p.via != "other"]

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._state.requests)

    @property
    def updates(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._state.updates)

    def calls(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    # --- the API (called with the lock held) ---------------------------------------------

    def _resolve(self, channel: str) -> str | None:
        channels = self._state.channels
        if channels is None:
            return channel
        return channels.get(channel)

    def _record(
        self,
        channel: str,
        text: str | None,
        blocks: list[dict[str, Any]] | None,
        metadata: dict[str, Any] | None,
        thread_ts: str | None,
        *,
        raw: str,
        via: str,
    ) -> Post:
        self._state.seq += 1
        seq = self._state.seq
        post = Post(
            channel=channel,
            text=text,
            blocks=blocks,
            metadata=metadata,
            thread_ts=thread_ts,
            ts=f"{self.start_time + seq}.{seq:06d}",
            time=float(self.start_time + seq),
            raw=raw,
            via=via,
        )
        self._state.posts.append(post)
        return post

    def _handle(self, method: str, params: dict[str, Any], raw: str) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://fake.slack.test/",
                "team": "Fake",
                "user": "policybot",
                "team_id": "T0FAKE",
                "user_id": "U0BOT",
                "bot_id": "B0BOT",
            }
        if method == "chat.postMessage":
            return self._post_message(params, raw)
        if method == "chat.update":
            return self._update(params)
        if method == "conversations.history":
            return self._history(params)
        if method == "conversations.replies":
            return self._replies(params)
        if method == "conversations.list":
            return self._list(params)
        return {"ok": False, "error": "unknown_method"}

    def _post_message(self, params: dict[str, Any], raw: str) -> dict[str, Any]:
        channel = self._resolve(str(params.get("channel") or ""))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        blocks = _json_field(params.get("blocks"))
        metadata = _json_field(params.get("metadata"))
        text = params.get("text")
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        if text and len(text) > 40_000:
            return {"ok": False, "error": "msg_too_long"}
        problems = validate_blocks(blocks or [])
        if problems:
            return {
                "ok": False,
                "error": "invalid_blocks",
                "response_metadata": {"messages": problems},
            }
        thread_ts = params.get("thread_ts")
        post = self._record(channel, text, blocks, metadata, thread_ts, raw=raw, via="api")
        message = {"type": "message", "text": text, "ts": post.ts, "bot_id": "B0BOT"}
        return {"ok": True, "channel": channel, "ts": post.ts, "message": message}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve(str(params.get("channel") or ""))
        for post in self._state.posts:
            if post.channel == channel and post.ts == params.get("ts"):
                post.text = params.get("text", post.text)
                post.blocks = _json_field(params.get("blocks")) or post.blocks
                post.metadata = _json_field(params.get("metadata")) or post.metadata
                self._state.updates.append(dict(params))
                return {"ok": True, "channel": channel, "ts": post.ts, "text": post.text}
        return {"ok": False, "error": "message_not_found"}

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve(str(params.get("channel") or ""))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        oldest = float(params.get("oldest") or 0)
        # Thread replies are not in a channel's history, only in conversations.replies.
        messages = sorted(
            (p for p in self._state.posts
             if p.channel == channel and float(p.ts) > oldest and p.thread_ts is None),
            key=lambda p: float(p.ts),
            reverse=True,
        )
        return self._page(messages, params, with_metadata)

    def _replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve(str(params.get("channel") or ""))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        parent = str(params.get("ts") or "")
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        oldest = float(params.get("oldest") or 0)
        thread = [p for p in self._state.posts if p.channel == channel
                  and (p.ts == parent or p.thread_ts == parent)]
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        # The parent first, then the replies oldest first, as Slack answers.
        messages = sorted((p for p in thread if p.ts == parent or float(p.ts) > oldest),
                          key=lambda p: (p.ts != parent, float(p.ts)))
        return self._page(messages, params, with_metadata)

    def _page(
        self, messages: list[Post], params: dict[str, Any], with_metadata: bool
    ) -> dict[str, Any]:
        offset = int(params.get("cursor") or 0) if str(params.get("cursor", "")).isdigit() else 0
        limit = min(int(params.get("limit") or 100), self.history_page_size)
        page = messages[offset : offset + limit]
        out = []
        for p in page:
            message: dict[str, Any] = {"type": "message", "ts": p.ts, "text": p.text or ""}
            if p.blocks:
                message["blocks"] = p.blocks
            if p.via != "other":
                message["bot_id"] = "B0BOT"
            if with_metadata and p.metadata:
                message["metadata"] = p.metadata
            if p.thread_ts:
                message["thread_ts"] = p.thread_ts
            out.append(message)
        more = offset + limit < len(messages)
        return {
            "ok": True,
            "messages": out,
            "has_more": more,
            "response_metadata": {"next_cursor": str(offset + limit) if more else ""},
        }

    def _list(self, params: dict[str, Any]) -> dict[str, Any]:
        known = self._state.channels or {}
        channels = [
            {"id": cid, "name": name[1:]} for name, cid in known.items() if name.startswith("#")
        ]
        return {"ok": True, "channels": channels, "response_metadata": {"next_cursor": ""}}

    def _webhook(self, params: dict[str, Any], raw: str) -> tuple[int, str]:
        if not params.get("text") and not params.get("blocks"):
            return 400, "no_text"
        problems = validate_blocks(params.get("blocks") or [])
        if problems:
            return 400, "invalid_blocks"
        self._record(
            "webhook", params.get("text"), params.get("blocks"), None, None, raw=raw, via="webhook"
        )
        return 200, "ok"


def _json_field(value: Any) -> Any:
    """Form-encoded requests carry blocks and metadata as JSON strings."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def validate_blocks(blocks: list[dict[str, Any]]) -> list[str]:
    """The subset of Slack's block validation that a renderer can get wrong."""
    problems = []
    if len(blocks) > FakeSlack.BLOCKS_MAX:
        problems.append(f"[ERROR] no more than {FakeSlack.BLOCKS_MAX} items allowed [/blocks]")
    for i, block in enumerate(blocks):
        texts: list[dict[str, Any]] = [block["text"]] if block.get("text") else []
        texts += block.get("elements", []) if block.get("type") == "context" else []
        limit = FakeSlack.HEADER_MAX if block.get("type") == "header" else FakeSlack.TEXT_MAX
        for obj in texts:
            text = obj.get("text", "")
            if not text:
                problems.append(f"[ERROR] must be more than 0 characters [/blocks/{i}/text]")
            if len(text.encode("utf-16-le")) // 2 > limit:
                problems.append(f"[ERROR] must be less than {limit + 1} characters [/blocks/{i}]")
            if block.get("type") == "header" and obj.get("type") != "plain_text":
                problems.append(f"[ERROR] must be plain_text [/blocks/{i}/text]")
    return problems


class _Handler(BaseHTTPRequestHandler):
    fake: FakeSlack  # set on the subclass made in FakeSlack.start
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8")
        content_type = self.headers.get("Content-Type", "")
        params: dict[str, Any]
        if "json" in content_type:
            params = json.loads(raw or "{}")
        else:
            params = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        path = self.path.split("?", 1)[0]
        if path == WEBHOOK_PATH:
            method = WEBHOOK_METHOD
        elif path.startswith("/api/"):
            method = path[len("/api/") :]
        else:
            self._answer(404, "no_service", "text/html")
            return

        fake = self.fake
        with fake._lock:
            fake._state.requests.append(Request(method, dict(self.headers.items()), params, raw))
            queue = fake._state.failures.get(method)
            failure = queue.popleft() if queue else None
        if failure is not None:
            self._fail(failure, webhook=method == WEBHOOK_METHOD)
            return

        if method == WEBHOOK_METHOD:
            with fake._lock:
                status, body = fake._webhook(params, raw)
            self._answer(status, body, "text/html")
            return

        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else params.get("token")
        if not token:
            result: dict[str, Any] = {"ok": False, "error": "not_authed"}
        elif token != fake.token:
            result = {"ok": False, "error": "invalid_auth"}
        else:
            with fake._lock:
                result = fake._handle(method, params, raw)
                queue = fake._state.holds.get(method)
                hold = queue.popleft() if queue and result.get("ok") else None
            if hold is not None:
                hold.held.set()
                hold.released.wait(hold.timeout)
        self._answer(200, json.dumps(result), "application/json; charset=utf-8")

    def _fail(self, failure: Failure, *, webhook: bool) -> None:
        if failure.disconnect:
            self.close_connection = True
            self.connection.close()
            return
        headers = {}
        if failure.retry_after is not None:
            headers["Retry-After"] = f"{failure.retry_after:g}"
        if failure.body is not None:
            body, ctype = failure.body, "text/html"
        elif webhook:  # incoming webhooks answer in plain text
            body = failure.error or ("rate_limited" if failure.status == 429 else "error")
            ctype = "text/html"
        elif failure.status == 429:
            body, ctype = json.dumps({"ok": False, "error": "ratelimited"}), "application/json"
        elif failure.status >= 500:
            body, ctype = "<html><body>Internal Server Error</body></html>", "text/html"
        else:
            body = json.dumps({"ok": False, "error": failure.error or "fatal_error"})
            ctype = "application/json"
        self._answer(failure.status, body, ctype, headers)

    def _answer(
        self, status: int, body: str, ctype: str, headers: Mapping[str, str] | None = None
    ) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True


# --- alerts to send ---------------------------------------------------------------------

PUBLISHED = datetime(2026, 11, 24, 8, 30, tzinfo=UTC)


def make_alert(
    *,
    id: int = 42,
    channel: str = "#japan-defence",
    title: str = "Japan and the Philippines sign OSA coastal radar deal",
    link: str | None = "https://www.mofa.go.jp/press/release/osa-philippines.html",
    summary: str = "",
    content: str = "",
    author: str | None = "Press Office",
    published: datetime | None = PUBLISHED,
    hits: Iterable[Hit] = (),
    rules: Iterable[AlertRule] | None = None,
    feed_name: str = "mofa-en",
    key: str = "https://www.mofa.go.jp/press/release/osa-philippines.html",
) -> Alert:
    """An alert with sensible defaults; tests override what they are about."""
    if rules is None:
        rules = (
            AlertRule(
                "osa-recipients",
                "Japan OSA — recipient countries",
                Severity.HIGH,
                "3f2a9c0d1e4b5a6978877665544332211",
            ),
        )
    entry = Entry(
        key=key,
        title=title,
        link=link,
        author=author,
        summary=summary,
        content=content,
        published=published,
    )
    return Alert(
        id=id,
        channel=channel,
        feed_name=feed_name,
        entry=entry,
        rules=tuple(rules),
        hits=tuple(hits),
        created_at=published,
    )


def hit(text: str, word: str, *, field: str = "summary", nth: int = 0) -> Hit:
    """The Hit for the ``nth`` occurrence of ``word`` in ``text`` (an entry field)."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(word, start + 1)
    return Hit(field=field, start=start, end=start + len(word), term=word)
