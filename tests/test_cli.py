"""The command line as a user runs it: real subprocesses, loopback feeds, the fake Slack."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT
from fakeslack import FakeSlack
from feedserver import FeedServer, Gate, Item, atom, rss
from typer.testing import CliRunner

from bot.cli import app, walk_commands


def items() -> list[Item]:
    when = datetime.now(UTC) - timedelta(hours=1)
    return [
        Item(title="Japan to provide OSA radars to the Philippines", guid="osa-1",
             link="https://example.org/osa-1", published=when,
             description="<p>Official Security Assistance for coastal surveillance.</p>"),
        Item(title="UK, Japan and Italy sign the GCAP treaty", guid="gcap-1",
             link="https://example.org/gcap-1", published=when),
        Item(title="Official Secrets Act case opens at the Old Bailey", guid="osa-uk",
             link="https://example.org/secrets", published=when,
             description="<p>The OSA prosecution of a former official.</p>"),
    ]


@pytest.fixture
def env(tmp_path: Path, db_url: str, fake_slack: FakeSlack,
        feed_server: FeedServer) -> dict[str, str]:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    base = f"http://{feed_server.netloc}"
    (rules / "feeds.yaml").write_text(
        f"feeds:\n  - {{name: uk-mod, url: '{base}/mod.atom'}}\n"
        f"  - {{name: jp-news, url: '{base}/news.xml', language: ja}}\n"
        f"  - {{name: broken, url: '{base}/broken.xml'}}\n", encoding="utf-8")
    feed_server.serve("/mod.atom", atom(items()[:2]), content_type="application/atom+xml",
                      etag='"m1"')
    feed_server.serve("/news.xml", rss(items()[2:]),
                      last_modified="Wed, 25 Nov 2026 08:00:00 GMT")
    feed_server.status("/broken.xml", 503)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("POLICYBOT_", "SLACK_")) and "proxy" not in k.lower()}
    return clean | {
        "POLICYBOT_DATABASE_URL": db_url, "POLICYBOT_RULES_DIR": str(rules),
        "POLICYBOT_ALLOW_PRIVATE_ADDRESSES": "true", "SLACK_BOT_TOKEN": fake_slack.token,
        "POLICYBOT_SLACK_API_URL": fake_slack.base_url,
        "POLICYBOT_SLACK_CHANNEL": "#japan-defence", "COLUMNS": "200",
    }


def policybot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], env=env, cwd=env.get("CWD"),
                          capture_output=True, text=True, timeout=120)


def summary(output: str) -> dict[str, int]:
    counts = {}
    for line in output.splitlines():
        parts = [p.strip() for p in line.strip("│┃| ").split("│")]
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_poll_delivers_each_alert_once_then_polls_conditionally(
    env: dict[str, str], fake_slack: FakeSlack, feed_server: FeedServer
) -> None:
    first = policybot(env, "poll")
    assert first.returncode == 0, first.stderr
    counts = summary(first.stdout)
    assert counts["feeds polled"] == 3
    assert counts["feeds failed"] == 1
    assert counts["entries new"] == 3
    assert counts["alerts sent"] == 2
    assert "broken" in first.stdout and "503" in first.stdout
    alerted = sorted(p.metadata["event_payload"]["entry_key"] for p in fake_slack.posts)
    assert alerted == ["gcap-1", "osa-1"], "the Official Secrets Act story is not an alert"

    second = policybot(env, "poll")
    assert second.returncode == 0, second.stderr
    counts = summary(second.stdout)
    assert (counts["feeds not modified"], counts["alerts sent"]) == (2, 0)
    assert len(fake_slack.posts) == 2
    conditional = [r.headers for r in feed_server.requests[-3:] if r.path != "/broken.xml"]
    assert {h.get("if-none-match") or h.get("if-modified-since") for h in conditional} == {
        '"m1"', "Wed, 25 Nov 2026 08:00:00 GMT"}


def test_poll_one_feed_by_name_or_url(env: dict[str, str], feed_server: FeedServer) -> None:
    result = policybot(env, "poll", "--feed", "uk-mod")
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout)["feeds polled"] == 1
    assert {r.path for r in feed_server.requests} == {"/mod.atom"}
    unknown = policybot(env, "poll", "--feed", "https://nowhere.example/feed")
    assert unknown.returncode == 1
    assert "no feed with URL or name" in unknown.stderr


def test_feeds_list_and_status_show_the_failing_feed(env: dict[str, str]) -> None:
    policybot(env, "poll")
    listed = policybot(env, "feeds", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    import json

    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["broken"]["health"] == "failing"
    assert rows["broken"]["last_status"] == 503
    assert rows["uk-mod"]["entries"] == 2
    status = policybot(env, "status")
    assert "broken" in status.stdout and "failing" in status.stdout
    assert "2 sent" in status.stdout


def test_a_permanent_slack_error_shows_in_status_and_retry_requeues(
    env: dict[str, str], fake_slack: FakeSlack
) -> None:
    fake_slack.fail_next("chat.postMessage", error="channel_not_found", times=2)
    policybot(env, "poll")
    status = policybot(env, "status")
    assert status.returncode == 1
    assert "channel_not_found" in status.stdout
    assert fake_slack.token not in status.stdout + status.stderr
    retried = policybot(env, "alerts", "retry", "--failed")
    assert "2 failed alerts requeued" in retried.stdout
    assert summary(policybot(env, "poll").stdout)["alerts sent"] == 2


def test_bad_settings_are_one_line_errors_naming_the_variable(env: dict[str, str]) -> None:
    result = policybot(env | {"POLICYBOT_LOG_FORMAT": "xml"}, "poll")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: POLICYBOT_LOG_FORMAT:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_broken_feeds_file_names_file_and_line(env: dict[str, str]) -> None:
    feeds = Path(env["POLICYBOT_RULES_DIR"]) / "feeds.yaml"
    feeds.write_text("feeds:\n  - {name: x, url: 'gopher://x'}\n")
    result = policybot(env, "poll")
    assert result.returncode == 2
    assert f"{feeds}:2:" in result.stderr and "http(s) URL" in result.stderr


def test_db_upgrade_reports_the_revision(env: dict[str, str]) -> None:
    result = policybot(env, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    from bot.store.db import head_revision

    assert f"at revision {head_revision()}" in result.stdout


_pumps: weakref.WeakKeyDictionary[object, queue.Queue[str | None]] = weakref.WeakKeyDictionary()
_pumps_lock = threading.Lock()
_activity = threading.Condition()  # notified at every line any child writes


def _lines_of(stream: object) -> queue.Queue[str | None]:
    """The lines of a child's output stream, read on a thread of their own (None at the end).

    Reading on a thread, rather than waiting on a selector, never misses a line that a
    buffered ``readline`` had already read ahead, and keeps the pipe drained, so that a child
    still logging while the test does something else never blocks on a full pipe."""
    with _pumps_lock:
        lines = _pumps.get(stream)
        if lines is None:
            lines = _pumps[stream] = queue.Queue()
            threading.Thread(target=_pump, args=(stream, lines), daemon=True).start()
    return lines


def _pump(stream: object, lines: queue.Queue[str | None]) -> None:
    try:
        for line in stream:  # type: ignore[attr-defined]
            with _activity:
                lines.put(line)
                _activity.notify_all()
    except (OSError, ValueError):  # closed under us when the test kills the child
        pass
    with _activity:
        lines.put(None)
        _activity.notify_all()


def read_until(stream: object, wanted: Callable[[str], bool], limit: float = 60.0) -> str:
    """Read lines until one satisfies ``wanted`` (a safety limit, not a synchronisation)."""
    return _read(stream, wanted, limit, "never saw the expected line")


def read_rest(stream: object, limit: float = 60.0) -> str:
    """Every line to the end of ``stream`` (the child exits), after what was read before."""
    return _read(stream, None, limit, "the output did not end")


def _read(stream: object, wanted: Callable[[str], bool] | None, limit: float,
          failure: str) -> str:
    """Lines up to the first that satisfies ``wanted``, or (None) up to the end."""
    lines = _lines_of(stream)
    seen: list[str] = []
    deadline = time.monotonic() + limit
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            lines.put(None)  # the end, for the next reader too
            if wanted is None:
                return "".join(seen)
            break
        seen.append(line)
        if wanted is not None and wanted(line):
            return "".join(seen)
    raise AssertionError(f"{failure}; got:\n" + "".join(seen))


def follow_until(streams: Sequence[object], done: Callable[[], bool],
                 limit: float = 120.0) -> None:
    """Follow several children's output until ``done()`` holds, checking it at every line
    any of them writes; a safety limit of ``limit`` seconds without a line, not a
    synchronisation."""
    queues = [_lines_of(stream) for stream in streams]
    with _activity:
        while not done():
            read = ended = 0
            for lines in queues:
                while True:
                    try:
                        line = lines.get_nowait()
                    except queue.Empty:
                        break
                    if line is None:
                        lines.put(None)
                        ended += 1
                        break
                    read += 1
            if read:
                continue
            assert ended < len(queues), "every child exited"
            assert _activity.wait(limit), f"no child wrote a line for {limit:g} s"


def test_read_until_sees_a_line_that_arrived_with_the_one_before() -> None:
    """The helper above: two lines in one write, then silence until the child is told to
    exit (a selector on the buffered stream waited for the limit here)."""
    script = "import sys; sys.stderr.write('one\\ntwo\\n'); sys.stderr.flush(); sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as child:
        try:
            assert read_until(child.stderr, lambda line: line == "one\n") == "one\n"
            assert read_until(child.stderr, lambda line: line == "two\n", limit=30) == "two\n"
            child.stdin.close()  # type: ignore[union-attr]
            assert read_rest(child.stderr) == ""
        finally:
            if child.poll() is None:
                child.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_polls_delivers_and_stops_cleanly_on_a_signal(
    env: dict[str, str], fake_slack: FakeSlack, signum: int
) -> None:
    with subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            read_until(process.stderr,
                       lambda line: "delivery alert=2" in line and "sent" in line)
            process.send_signal(signum)
            tail = read_rest(process.stderr)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert "stopped" in tail
    assert len(fake_slack.posts) == 2


def test_a_second_signal_stops_at_once_and_loses_nothing(
    env: dict[str, str], fake_slack: FakeSlack, feed_server: FeedServer
) -> None:
    """The first SIGTERM waits for running work — here a fetch the feed server holds — and
    a second one stops at once, as a crash would; the next run picks the work up again."""
    gate = Gate(open_at=None, timeout=120)
    when = datetime.now(UTC) - timedelta(hours=1)
    feed_server.gated("/slow.xml", rss([Item(
        title="UK, Japan and Italy sign GCAP workshare deal", guid="gcap-slow",
        link="https://example.org/gcap-slow", published=when)]), gate)
    rules = Path(env["POLICYBOT_RULES_DIR"])
    with (rules / "feeds.yaml").open("a", encoding="utf-8") as feeds:
        feeds.write(f"  - {{name: slow, url: 'http://{feed_server.netloc}/slow.xml'}}\n")
    env = env | {"POLICYBOT_FETCH_TIMEOUT": "100", "POLICYBOT_FETCH_DEADLINE": "110"}
    try:
        with subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) as process:
            try:
                assert gate.wait_for_waiting(1, timeout=60), "the slow feed was never fetched"
                process.send_signal(signal.SIGTERM)
                read_until(process.stderr, lambda line: "stopping: letting running jobs" in line)
                assert process.poll() is None, "the first signal waits for the held fetch"
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=60) == 128 + signal.SIGTERM
                tail = read_rest(process.stderr)
            finally:
                if process.poll() is None:
                    process.kill()
    finally:
        gate.open()
    assert "received SIGTERM again: stopping now" in tail
    assert "stopped" not in tail
    # Nothing lost: the slow feed stored nothing and stays claimed until its lease ends, as
    # after a crash; once it has ended (moved to now here), the next poll takes it.
    from sqlalchemy import select, update

    from bot.store import make_engine
    from bot.store.tables import entries, feeds

    engine = make_engine(env["POLICYBOT_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            assert conn.execute(select(entries.c.id).where(
                entries.c.key == "gcap-slow")).first() is None
            assert conn.execute(update(feeds).where(feeds.c.lease_until.is_not(None))
                                .values(lease_until=datetime.now(UTC))).rowcount >= 1
    finally:
        engine.dispose()
    result = policybot(env, "poll")
    assert result.returncode == 0, result.stderr
    keys = [p.metadata["event_payload"]["entry_key"] for p in fake_slack.posts if p.metadata]
    assert keys.count("gcap-slow") == 1


def test_every_command_has_help() -> None:
    runner = CliRunner()
    paths = list(walk_commands())
    assert ["poll"] in paths and ["feeds", "list"] in paths and ["demo"] in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        body = result.output.split("Options", 1)[0]
        assert len(body.split("Usage:", 1)[-1].strip().splitlines()) >= 2, (
            f"`policybot {' '.join(path)}` needs help text")


def test_demo_prints_alerts_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POLICYBOT_", "SLACK_")) and "proxy" not in k.lower()}
    env |= {"POLICYBOT_RULES_DIR": str(ROOT / "rules"), "COLUMNS": "120"}
    result = subprocess.run([sys.executable, "-m", "bot", "demo"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    counts = summary(result.stdout)
    assert counts["feeds polled"] == 3 and counts["feeds failed"] == 0
    assert counts["alerts sent"] >= 4
    assert "Djibouti" in result.stdout
    assert not list(tmp_path.iterdir()), "the demo leaves nothing behind"


def test_no_secret_appears_in_debug_output(env: dict[str, str], fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("chat.postMessage", error="invalid_auth")
    result = policybot(env, "poll", "--verbose")
    assert result.returncode == 0, result.stderr
    assert "DEBUG" in result.stderr, "the run logged at debug level"
    assert fake_slack.token not in result.stdout + result.stderr
    webhook = env | {"SLACK_BOT_TOKEN": "", "SLACK_WEBHOOK_URL": fake_slack.webhook_url}
    del webhook["SLACK_BOT_TOKEN"]
    result = policybot(webhook, "poll", "--verbose")
    assert result.returncode == 0, result.stderr
    secret_part = fake_slack.webhook_url.rsplit("/", 1)[-1]
    assert secret_part not in result.stdout + result.stderr


def test_json_logs_bind_the_feed_and_the_alert_and_hold_no_secret(
    env: dict[str, str], fake_slack: FakeSlack
) -> None:
    import json

    result = policybot(env | {"POLICYBOT_LOG_FORMAT": "json"}, "poll", "--verbose")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert events and all({"time", "level", "logger", "message"} <= set(e) for e in events)
    polls = {e["feed"]: e for e in events if e.get("event") == "poll"}
    assert polls["broken"]["outcome"] == "failed" and polls["broken"]["status"] == 503
    assert polls["uk-mod"]["new"] == 2
    sent = [e for e in events if e.get("event") == "delivery" and e["outcome"] == "sent"]
    assert sorted(e["alert"] for e in sent) == [1, 2]
    assert fake_slack.token not in result.stderr
