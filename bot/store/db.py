"""Engines and migrations: the only place that knows which database it is talking to."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from bot.errors import ConfigError, StorageError

# The migrations live beside the package in a source checkout (and an editable install);
# an installed copy elsewhere points POLICYBOT_MIGRATIONS_DIR at them.
MIGRATIONS_DIR = Path(
    os.environ.get("POLICYBOT_MIGRATIONS_DIR")
    or Path(__file__).resolve().parent.parent.parent / "migrations"
)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and enforced foreign keys."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "POLICYBOT_DATABASE_URL: not a database URL (e.g. sqlite:///policybot.db or "
            "postgresql+psycopg://user@host/db)"
        ) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"POLICYBOT_DATABASE_URL: unsupported database driver: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    if not _is_memory(dbapi_connection):
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _is_memory(dbapi_connection: Any) -> bool:
    cursor = dbapi_connection.cursor()
    try:
        rows = cursor.execute("PRAGMA database_list").fetchall()
    finally:
        cursor.close()
    return any(row[2] == "" for row in rows)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


def upgrade(engine_or_url: Engine | str) -> None:
    """Alembic upgrade to head: the only way the schema changes."""
    from alembic import command

    if isinstance(engine_or_url, str):
        engine = make_engine(engine_or_url)
        try:
            _upgrade_with(engine, command)
        finally:
            engine.dispose()
    else:
        _upgrade_with(engine_or_url, command)


def _upgrade_with(engine: Engine, command: Any) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


@contextlib.contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction; an operational failure (the database went away, disk full, locked)
    becomes a one-line StorageError. Bugs (programming errors) still surface as they are."""
    try:
        with engine.begin() as conn:
            yield conn
    except OperationalError as exc:
        first_line = (str(exc.orig).strip().splitlines() or ["unknown"])[0]
        raise StorageError(f"database error: {first_line}") from exc
