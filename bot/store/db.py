"""Engines and migrations: the only place that knows which database it is talking to."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, Table, create_engine, event
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
        # synchronous stays FULL (an fsync per commit). NORMAL in WAL mode would be faster
        # but can lose the last commits on power loss: an alert already posted would then be
        # written again by the next poll, as a new row, and posted twice. The poller groups
        # feeds into one transaction instead (bot.pipeline._Group; issue 7).
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


# ------------------------------------------------------------------ bulk inserts (issue 7)


@dataclass(frozen=True, slots=True)
class _InsertShape:
    """An INSERT's text for one table, column list and dialect, and how to bind a row."""

    prefix: str  # INSERT INTO t (a, b, …) VALUES
    group: str  # (?, ?, …) or (%s::JSON, …): one row's placeholders
    columns: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]


_SHAPES: dict[tuple[Dialect, str, tuple[str, ...]], _InsertShape] = {}
_PYFORMAT = re.compile(r"%\((\w+)\)s")


def _shape(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> _InsertShape:
    """Compiled once per dialect, table and columns by SQLAlchemy itself, so that the driver
    gets what Core would send: the same quoting, the same casts (PostgreSQL's multi-row
    VALUES needs them: an all-NULL column would be text), the same bound values (UTC
    datetimes as SQLite's text, JSON serialised)."""
    key = (dialect, table.name, columns)
    shape = _SHAPES.get(key)
    if shape is not None:
        return shape
    # inline(): no RETURNING of the primary key, no defaults run before the statement.
    compiled = table.insert().inline().compile(dialect=dialect, column_keys=list(columns))
    text = compiled.string
    cut = text.index(" VALUES ") + len(" VALUES ")
    prefix, group = text[:cut], text[cut:]
    if set(compiled.positiontup or _PYFORMAT.findall(group)) != set(columns):
        raise ValueError(f"insert_rows: {table.name}: columns without a value: {text}")
    if compiled.positiontup is not None:  # qmark (sqlite3)
        order = tuple(compiled.positiontup)
    else:  # pyformat (psycopg): positional %s, in the order they appear
        order = tuple(_PYFORMAT.findall(group))
        group = _PYFORMAT.sub("%s", group)
    processors = tuple(
        table.c[name].type._cached_bind_processor(dialect)  # what Core would apply
        for name in order)
    shape = _InsertShape(prefix, group, order, processors)
    _SHAPES[key] = shape
    return shape


def _defaults(table: Table, given: Sequence[str]) -> dict[str, Any]:
    """The Python-side defaults (``Column(default=…)``) of the columns a row leaves out."""
    out: dict[str, Any] = {}
    for column in table.c:
        default = column.default
        if column.name in given or default is None or column.primary_key:
            continue
        if getattr(default, "is_scalar", False):
            out[column.name] = default.arg  # type: ignore[attr-defined]
        elif getattr(default, "is_callable", False):
            out[column.name] = default.arg(None)  # type: ignore[attr-defined]
    return out


def insert_rows(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *,
    conflict: Sequence[str] = (), returning: Sequence[str] = (), chunk: int = 200,
) -> list[tuple[Any, ...]]:
    """INSERT ``rows`` (dicts with the same keys) through the DB-API driver, without Core's
    per-row work: one ``executemany``, or with ``returning`` one multi-row INSERT per
    ``chunk`` rows. ``conflict`` names a unique key: rows that would break it are skipped
    (ON CONFLICT … DO NOTHING, on both databases). Returns the ``returning`` columns of the
    rows inserted, in no particular order."""
    if not rows:
        return []
    extra = _defaults(table, list(rows[0]))
    columns = tuple(rows[0]) + tuple(extra)
    dialect = conn.dialect
    shape = _shape(dialect, table, columns)
    quote = dialect.identifier_preparer.quote
    suffix = ""
    if conflict:
        suffix += f" ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO NOTHING"
    if returning:
        suffix += f" RETURNING {', '.join(quote(c) for c in returning)}"
    bound = [tuple(value if proc is None else proc(value)
                   for proc, value in zip(shape.processors, _values(row, extra, shape.columns),
                                          strict=True))
             for row in rows]
    if not returning:
        conn.exec_driver_sql(shape.prefix + shape.group + suffix, bound)
        return []
    out: list[tuple[Any, ...]] = []
    for start in range(0, len(bound), chunk):
        part = bound[start:start + chunk]
        sql = shape.prefix + ", ".join([shape.group] * len(part)) + suffix
        flat = tuple(value for row in part for value in row)
        out.extend(tuple(r) for r in conn.exec_driver_sql(sql, flat))
    return out


def _values(row: Mapping[str, Any], extra: Mapping[str, Any],
            columns: Sequence[str]) -> Iterator[Any]:
    for name in columns:
        yield row[name] if name in row else extra[name]
