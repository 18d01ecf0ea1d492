"""Load and validate ``rules/digests.yaml``: who gets which digest, and when.

```yaml
digests:
  - name: weekly                       # lower-case, unique; `policybot digest send weekly`
    title: "UK–Japan security"
    recipients: [desk@example.org]
    rules: [osa-recipients, gcap]      # rule ids; rules whose route.digest names it are in too
    owners: [japan-desk]               # every rule with this owner
    min_severity: high                 # every rule this severe or more
    schedule: "0 8 * * mon"            # cron: minute hour day month weekday (default)
    timezone: Europe/London            # default
    period: 7d                         # the days before the send time (default 7d)
    grace: 2d                          # a send missed while the bot was down (default 2d)
    experimental: true                 # include experimental rules, marked (default)
    skip_empty: false                  # an empty period still mails "nothing matched"
    max_per_rule: 15                   # entries listed per rule; the rest are counted
```

The first problem is a ConfigError naming the file, line and column (``Located.error``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import EmailStr, TypeAdapter, ValidationError

from bot.digest.schedule import cron_trigger
from bot.errors import ConfigError
from bot.model import RuleStatus, Severity
from bot.rules import Rule
from bot.sources import parse_duration
from bot.yamlfile import Located, read_yaml

DEFAULT_SCHEDULE = "0 8 * * mon"
DEFAULT_TIMEZONE = "Europe/London"
DEFAULT_PERIOD = timedelta(days=7)
DEFAULT_GRACE = timedelta(days=2)
DEFAULT_MAX_PER_RULE = 15

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_KEYS = (
    "name", "title", "recipients", "rules", "owners", "min_severity", "schedule", "timezone",
    "period", "grace", "experimental", "skip_empty", "max_per_rule", "notes",
)
_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)


@dataclass(frozen=True, slots=True)
class DigestConfig:
    """One digest as declared in ``rules/digests.yaml``."""

    name: str
    title: str
    recipients: tuple[str, ...]
    rules: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    min_severity: Severity | None = None
    schedule: str = DEFAULT_SCHEDULE
    timezone: str = DEFAULT_TIMEZONE
    period: timedelta = DEFAULT_PERIOD
    grace: timedelta = DEFAULT_GRACE
    experimental: bool = True
    skip_empty: bool = False
    max_per_rule: int = DEFAULT_MAX_PER_RULE
    line: int | None = field(default=None, compare=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def includes(self, rule: Rule) -> bool:
        """Whether ``rule``'s matches belong in this digest."""
        if rule.status is RuleStatus.EXPERIMENTAL and not self.experimental:
            return False
        return (
            self.name in rule.digests
            or rule.id in self.rules
            or (rule.owner is not None and rule.owner in self.owners)
            or (self.min_severity is not None and rule.severity.rank >= self.min_severity.rank)
        )


def validate_address(value: str) -> str:
    """A recipient address, normalised by email-validator; ValueError with the reason."""
    try:
        return _EMAIL.validate_python(value)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"].removeprefix("value is not a valid email "
                                                             "address: ")) from None


def load_digests(path: Path, rule_ids: Iterable[str] | None = None) -> tuple[DigestConfig, ...]:
    """Read the digests file (absent → no digests). With ``rule_ids``, a ``rules:`` entry that
    names no rule is an error too."""
    if not path.exists():
        return ()
    doc = read_yaml(path)
    if doc.data is None:
        return ()
    if not isinstance(doc.data, dict) or set(doc.data) - {"digests"}:
        raise doc.error("expected a mapping with one key, 'digests', holding a list of digests")
    items = doc.data.get("digests") or []
    if not isinstance(items, list):
        raise doc.error("'digests' must be a list", "digests")
    known = sorted(rule_ids) if rule_ids is not None else None
    digests: list[DigestConfig] = []
    names: dict[str, int] = {}
    for index, item in enumerate(items):
        digest = _digest(doc, index, item, known)
        if digest.name in names:
            raise doc.error(f"duplicate digest name {digest.name!r} "
                            f"(also digest #{names[digest.name] + 1})", "digests", index, "name")
        names[digest.name] = index
        digests.append(digest)
    return tuple(digests)


def _strings(doc: Located, at: tuple[str | int, ...], key: str, item: dict[str, Any]
             ) -> list[str]:
    value = item.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise doc.error(f"{key} must be a list of strings", *at, key)
    return [v.strip() for v in value]


def _digest(doc: Located, index: int, item: Any, known_rules: Sequence[str] | None
            ) -> DigestConfig:
    at: tuple[str | int, ...] = ("digests", index)
    if not isinstance(item, dict):
        raise doc.error("each digest must be a mapping with at least 'name', 'title' and "
                        "'recipients'", *at)
    unknown = sorted(set(item) - set(_KEYS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], _KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(_KEYS)}"
        raise doc.error(f"unknown key {unknown[0]!r}{hint}", *at, unknown[0], at_key=True)
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise doc.error("digest needs a 'name' of lower-case letters, digits, '-', '.' or '_'",
                        *at, "name")
    title = item.get("title")
    if not isinstance(title, str) or not title.strip():
        raise doc.error("digest needs a 'title' (it starts the email's subject)", *at, "title")
    if "\r" in title or "\n" in title:
        raise doc.error("title must be one line", *at, "title")
    raw_recipients = _strings(doc, at, "recipients", item)
    if not raw_recipients:
        raise doc.error("digest needs 'recipients': a list of email addresses", *at,
                        "recipients")
    recipients: list[str] = []
    for i, address in enumerate(raw_recipients):
        try:
            recipients.append(validate_address(address))
        except ValueError as exc:
            raise doc.error(f"recipient {address!r} is not an email address: {exc}",
                            *at, "recipients", i) from None
    rules = _strings(doc, at, "rules", item)
    if known_rules is not None:
        for i, rule_id in enumerate(rules):
            if rule_id not in known_rules:
                close = difflib.get_close_matches(rule_id, known_rules, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise doc.error(f"no rule with id {rule_id!r}{hint}", *at, "rules", i)
    owners = _strings(doc, at, "owners", item)
    min_severity = None
    if item.get("min_severity") is not None:
        try:
            min_severity = Severity(str(item["min_severity"]).lower())
        except ValueError:
            raise doc.error("min_severity must be one of low, medium, high, critical",
                            *at, "min_severity") from None
    schedule = item.get("schedule", DEFAULT_SCHEDULE)
    if not isinstance(schedule, str):
        raise doc.error("schedule must be a cron expression such as \"0 8 * * mon\"",
                        *at, "schedule")
    timezone = item.get("timezone", DEFAULT_TIMEZONE)
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise doc.error(f"unknown timezone {timezone!r}; use an IANA name such as "
                        "Europe/London or Asia/Tokyo", *at, "timezone") from None
    try:
        cron_trigger(schedule, str(timezone))
    except ValueError as exc:
        raise doc.error(f"schedule: {exc}", *at, "schedule") from None
    period = _duration(doc, at, item, "period", DEFAULT_PERIOD)
    grace = _duration(doc, at, item, "grace", DEFAULT_GRACE)
    if period < timedelta(hours=1):
        raise doc.error("period: at least 1h", *at, "period")
    flags = {}
    for key, default in (("experimental", True), ("skip_empty", False)):
        value = item.get(key, default)
        if not isinstance(value, bool):
            raise doc.error(f"{key} must be true or false", *at, key)
        flags[key] = value
    max_per_rule = item.get("max_per_rule", DEFAULT_MAX_PER_RULE)
    if not isinstance(max_per_rule, int) or isinstance(max_per_rule, bool) or max_per_rule < 1:
        raise doc.error("max_per_rule must be a whole number of at least 1", *at,
                        "max_per_rule")
    line, _ = doc.where(*at)
    return DigestConfig(
        name=name, title=title.strip(), recipients=tuple(dict.fromkeys(recipients)),
        rules=tuple(rules), owners=tuple(owners), min_severity=min_severity,
        schedule=schedule, timezone=str(timezone), period=period, grace=grace,
        experimental=flags["experimental"], skip_empty=flags["skip_empty"],
        max_per_rule=max_per_rule, line=line,
    )


def _duration(doc: Located, at: tuple[str | int, ...], item: dict[str, Any], key: str,
              default: timedelta) -> timedelta:
    if key not in item:
        return default
    try:
        return parse_duration(item[key])
    except ValueError as exc:
        raise doc.error(f"{key}: {exc}", *at, key) from None


def find_digest(digests: Sequence[DigestConfig], name: str, path: Path) -> DigestConfig:
    """The digest called ``name``; a ConfigError listing the others when there is none."""
    for digest in digests:
        if digest.name == name:
            return digest
    names = ", ".join(d.name for d in digests) or "none"
    raise ConfigError(f"no digest named {name!r} (digests: {names})", path=path)
