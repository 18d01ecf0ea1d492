"""Shared fixtures: databases (SQLite and PostgreSQL), a clock, the loopback servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakeslack import FakeSlack
from feedserver import FeedServer
from sqlalchemy import text

from bot.store import Store, make_engine, upgrade

POSTGRES_URL = os.environ.get("POLICYBOT_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("POLICYBOT_REQUIRE_POSTGRES") == "1"
ROOT = Path(__file__).resolve().parent.parent


def _reset_postgres(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: SQLite in tmp_path, or the test PostgreSQL, reset."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("POLICYBOT_TEST_POSTGRES_URL is not set but PostgreSQL tests are required")
        pytest.skip("POLICYBOT_TEST_POSTGRES_URL not set")
    try:
        _reset_postgres(POSTGRES_URL)
    except Exception as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL at POLICYBOT_TEST_POSTGRES_URL unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    yield POSTGRES_URL


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The test PostgreSQL, reset: for what only PostgreSQL can do (replicas)."""
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("POLICYBOT_TEST_POSTGRES_URL is not set but PostgreSQL tests are required")
        pytest.skip("POLICYBOT_TEST_POSTGRES_URL not set")
    _reset_postgres(POSTGRES_URL)
    yield POSTGRES_URL


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    engine = make_engine(db_url)
    upgrade(engine)
    try:
        yield Store(engine)
    finally:
        engine.dispose()


class FakeClock:
    """An injected clock: tests move time explicitly; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    """A fake Slack Web API on loopback, driven by the real slack_sdk client."""
    # slack_sdk routes through an HTTP(S)_PROXY from the environment, loopback included.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FakeSlack.running() as fake:
        yield fake


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A feed server on 127.0.0.1 with readable steps (serve, status, redirect, …)."""
    with FeedServer() as server:
        yield server
