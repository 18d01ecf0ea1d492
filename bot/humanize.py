"""Times for people: "3h ago", "in 5m", ISO 8601 for JSON. Shared by the CLI and the
web console."""

from __future__ import annotations

from datetime import datetime


def ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    seconds = int((now - when).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            text = f"{seconds // size}{unit}"
            break
    else:
        text = f"{seconds}s"
    return f"in {text}" if future else f"{text} ago"


def iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None
