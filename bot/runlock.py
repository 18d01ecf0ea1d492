"""One runner per SQLite database: SQLite is for one process (DESIGN.md, Scale).

A second ``policybot run`` against the same SQLite file would race the first for feeds and
alerts without the row leases PostgreSQL gives; it is refused with a clear message. The lock
is an advisory ``flock`` on ``<database>.lock``, released by the kernel when the process
exits, however it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from bot.errors import ConfigError


@contextlib.contextmanager
def single_runner(database_url: str) -> Iterator[None]:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        yield
        return
    path = Path(url.database).resolve()
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"POLICYBOT_DATABASE_URL: another `policybot run` already uses {path}; "
                "SQLite is for one process — stop the other one, or use PostgreSQL to run "
                "several replicas"
            ) from None
        yield
    finally:
        os.close(fd)
