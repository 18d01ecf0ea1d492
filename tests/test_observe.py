"""What an operator watches: /healthz and /metrics from `policybot run --http`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_cli import env, read_until  # noqa: F401 - the env fixture is reused

from bot.errors import ConfigError
from bot.httpd import parse_bind, serving


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_run_serves_health_and_metrics(env: dict[str, str]) -> None:  # noqa: F811
    with subprocess.Popen([sys.executable, "-m", "bot", "run", "--http", "127.0.0.1:0"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            seen = read_until(process.stderr, lambda line: "serving /healthz" in line)
            address = re.search(r"http://[\d.]+:\d+", seen)
            assert address is not None
            read_until(process.stderr, lambda line: "delivery alert=2" in line)
            status, body = get(address.group(0) + "/healthz")
            assert status == 200
            assert json.loads(body) == {"status": "ok", "scheduler": "running",
                                        "database": "ok"}
            status, metrics = get(address.group(0) + "/metrics")
            assert status == 200
            assert 'policybot_outbox{status="sent"} 2.0' in metrics
            assert 'policybot_feeds{health="failing"} 1.0' in metrics
            assert 'policybot_polls_total{outcome="ok"} 2.0' in metrics
            assert 'policybot_polls_total{outcome="failed"} 1.0' in metrics
            assert 'policybot_entries_stored_total{kind="new"} 3.0' in metrics
            assert 'policybot_matches_total{rule="gcap"} 1.0' in metrics
            assert 'policybot_alerts_total{outcome="sent"} 2.0' in metrics
            assert "policybot_delivery_latency_seconds_count 2.0" in metrics
            assert get(address.group(0) + "/nope")[0] == 404
        finally:
            process.terminate()
            process.wait(timeout=60)


def test_health_is_503_with_the_reason_when_the_database_is_gone(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from apscheduler.schedulers.background import BackgroundScheduler

    from bot.scheduler import health
    from bot.store import Store, make_engine

    # A real store whose database does not answer (nothing listens on port 1).
    dead = Store(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none"))
    scheduler = BackgroundScheduler()
    scheduler.start()
    try:
        app = SimpleNamespace(store=dead, rules=SimpleNamespace(error=None))
        ok, detail = health(app, scheduler)  # type: ignore[arg-type]
    finally:
        scheduler.shutdown()
        dead.engine.dispose()
    assert not ok
    assert detail["scheduler"] == "running"
    assert detail["database"].startswith("database error:")
    with serving("127.0.0.1:0", lambda: (ok, detail)) as (host, port):
        status, body = get(f"http://{host}:{port}/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "unhealthy"


@pytest.mark.parametrize("bind", ["9108", "localhost", "127.0.0.1:http", ":80", "1.2.3.4:70000"])
def test_a_bad_bind_is_a_one_line_error(bind: str) -> None:
    with pytest.raises(ConfigError, match="--http: expected HOST:PORT"):
        parse_bind(bind)
