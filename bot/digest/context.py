"""A digest command's world: settings, the digest store, the rules and rules/digests.yaml,
with the database migrated and disposed of afterwards (``policybot digest …``, the web
console's Digests page)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bot.config import Settings
from bot.digest.config import DigestConfig, find_digest, load_digests
from bot.digest.schedule import Period, last_period, parse_period
from bot.errors import ConfigError
from bot.rules import RuleSet, load_rules
from bot.store import make_engine, upgrade
from bot.store.digests import DigestStore


@dataclass
class DigestContext:
    settings: Settings
    store: DigestStore
    rules: RuleSet
    digests: tuple[DigestConfig, ...]

    @property
    def path(self) -> Path:
        return self.settings.rules_dir / "digests.yaml"

    def digest(self, name: str) -> DigestConfig:
        return find_digest(self.digests, name, self.path)

    def period(self, digest: DigestConfig, text: str | None, now: datetime) -> Period:
        try:
            return parse_period(digest, text) if text else last_period(digest, now)
        except ValueError as exc:
            raise ConfigError(f"--period: {exc}") from None


@contextlib.contextmanager
def digest_context(settings: Settings) -> Iterator[DigestContext]:
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
        rules = load_rules(settings.rules_dir)
        digests = load_digests(settings.rules_dir / "digests.yaml", [r.id for r in rules.rules])
        yield DigestContext(settings, DigestStore(engine), rules, digests)
    finally:
        engine.dispose()
