"""When a digest is sent and which period each send covers. Pure: ``now`` is a parameter.

A send time is a fire time of the digest's cron schedule in its timezone; the period it
covers is the ``period`` (default 7 days, in wall-clock time so a DST change keeps "Monday
08:00") before it. Periods are named for people: ``2026-W48`` is the weekly period that
starts in ISO week 48 (sent on the Monday after it), ``2026-11-30`` the period sent that day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from apscheduler.triggers.cron import CronTrigger

if TYPE_CHECKING:
    from bot.digest.config import DigestConfig

# Standard cron numbers weekdays from Sunday (0 or 7); APScheduler 3 from Monday, and its
# from_crontab passes numbers through unchanged (agronholm/apscheduler#286), so "0 8 * * 1"
# would fire on Tuesdays. Numbers are translated to names, which both read the same way.
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEK_LABEL = re.compile(r"^(\d{4})-W(\d{2})$")
_DATE_LABEL = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class Period:
    """``[start, end)`` in UTC; ``end`` is the scheduled send time."""

    start: datetime
    end: datetime
    label: str


def _weekday_names(field: str) -> str:
    """Translate numeric cron weekdays (0/7 = Sunday) into names; names pass through."""
    out: list[str] = []
    for item in field.split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() else None
        if step_text and step is None:
            raise ValueError(f"weekday step {step_text!r} is not a number")
        if base == "*" and step is None:
            out.append("*")
            continue
        low, _, high = (("0", "-", "6") if base == "*" else base.partition("-"))
        if not low.isdigit() or (high and not high.isdigit()):
            if step is not None:
                raise ValueError(f"write weekday steps with numbers, not {item!r}")
            out.append(item.lower())
            continue
        first, last = int(low), int(high) if high else int(low)
        if step is not None and not high and base != "*":
            last = 6
        if not (0 <= first <= 7 and 0 <= last <= 7) or first > last:
            raise ValueError(f"weekday {item!r} is out of range (0-7, 0 and 7 are Sunday)")
        out.extend(_CRON_DAYS[d] for d in range(first, last + 1, step or 1))
    return ",".join(dict.fromkeys(out))


def cron_trigger(schedule: str, timezone: str) -> CronTrigger:
    """A CronTrigger for a standard five-field crontab line; ValueError says what is wrong."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got "
                         f"{len(fields)} in {schedule!r}")
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_weekday_names(weekday), timezone=timezone)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _trigger(digest: DigestConfig) -> CronTrigger:
    return cron_trigger(digest.schedule, digest.timezone)


def next_send(digest: DigestConfig, after: datetime) -> datetime | None:
    """The first send time strictly after ``after``."""
    found = _trigger(digest).get_next_fire_time(after, after)
    return found.astimezone(UTC) if found is not None else None


def sends_between(digest: DigestConfig, start: datetime, end: datetime) -> list[datetime]:
    """Send times in ``(start, end]``, oldest first, in UTC."""
    out: list[datetime] = []
    at = next_send(digest, start)
    while at is not None and at <= end:
        out.append(at)
        at = next_send(digest, at)
    return out


def last_send(digest: DigestConfig, now: datetime) -> datetime | None:
    """The latest send time at or before ``now`` (looking back up to a year)."""
    for days in (8, 32, 367):
        found = sends_between(digest, now - timedelta(days=days), now)
        if found:
            return found[-1]
    return None


def period_ending(digest: DigestConfig, end: datetime) -> Period:
    """The period a send at ``end`` covers: ``digest.period`` before it, in wall-clock time."""
    local_end = end.astimezone(digest.tz)
    start = (local_end - digest.period).astimezone(UTC)
    return Period(start, end.astimezone(UTC), label(digest, start, end))


def label(digest: DigestConfig, start: datetime, end: datetime) -> str:
    if digest.period == timedelta(days=7):
        year, week, _ = start.astimezone(digest.tz).isocalendar()
        return f"{year}-W{week:02d}"
    return end.astimezone(digest.tz).date().isoformat()


def due_periods(digest: DigestConfig, now: datetime) -> list[Period]:
    """Periods whose send time has come and is not older than the grace, oldest first."""
    return [period_ending(digest, at) for at in sends_between(digest, now - digest.grace, now)]


def last_period(digest: DigestConfig, now: datetime) -> Period:
    """The most recent complete period (what ``digest send NAME`` sends by default)."""
    at = last_send(digest, now)
    if at is None:
        raise ValueError(f"digest {digest.name!r} has not been due in the past year "
                         f"(schedule {digest.schedule!r})")
    return period_ending(digest, at)


def parse_period(digest: DigestConfig, text: str) -> Period:
    """``2026-W48`` (the period that starts in that ISO week) or ``2026-11-30`` (the period
    sent that day). ValueError says what to write instead."""
    text = text.strip()
    tz = digest.tz
    week = _WEEK_LABEL.match(text)
    if week:
        try:
            monday = date.fromisocalendar(int(week.group(1)), int(week.group(2)), 1)
        except ValueError:
            raise ValueError(f"{text!r}: no such ISO week") from None
        week_start = datetime.combine(monday, time(), tz)
        # The first send whose period starts in that week: at or after week start + period.
        earliest_end = (week_start + digest.period).astimezone(UTC)
        at = next_send(digest, earliest_end - timedelta(microseconds=1))
        if at is None:
            raise ValueError(f"{text!r}: the schedule has no send after that week")
        found = period_ending(digest, at)
        if found.start.astimezone(tz) >= week_start + timedelta(days=7):
            raise ValueError(f"{text!r}: no period of {digest.name!r} starts in that week")
        return found
    if _DATE_LABEL.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r}: no such date") from None
        day_start = datetime.combine(day, time(), tz)
        at = next_send(digest, day_start.astimezone(UTC) - timedelta(microseconds=1))
        if at is None or at.astimezone(tz).date() != day:
            raise ValueError(f"{digest.name!r} is not sent on {text} (schedule "
                             f"{digest.schedule!r}, {digest.timezone})")
        return period_ending(digest, at)
    raise ValueError(f"{text!r} is not a period; write an ISO week such as 2026-W48 or the "
                     "send date such as 2026-11-30")
