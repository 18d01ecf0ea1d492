"""Logging setup: text or JSON lines on stderr, with secrets scrubbed from every record."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

REDACTED = "[redacted]"


# Fields that log calls bind with ``extra=`` (the feed of a poll, the alert of a delivery).
BOUND = ("event", "feed", "alert", "kind", "channel", "outcome", "status", "new", "changed",
         "alerts", "error", "ts")


class SecretFilter(logging.Filter):
    """Replaces known secret values (tokens, webhook URLs, passwords) wherever they appear,
    including in third-party libraries' debug output."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = self.scrub(record.getMessage())
            record.msg, record.args = message, None
            for key in BOUND:
                value = getattr(record, key, None)
                if isinstance(value, str):
                    setattr(record, key, self.scrub(value))
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in BOUND:
            value = getattr(record, key, None)
            if value is not None:
                payload[key] = value
        if record.exc_text or record.exc_info:
            payload["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(payload, ensure_ascii=False)


def setup_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # APScheduler narrates every job run at INFO; keep its warnings and errors.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
