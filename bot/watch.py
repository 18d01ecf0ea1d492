"""Keep the rules and the feeds file current while the bot runs.

Files are re-read when their modification times change; an invalid edit is logged, kept for
``status``, and the last good rule set stays in force.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bot import metrics
from bot.errors import ConfigError
from bot.rules import RuleSet, load_rules
from bot.sources import load_feeds
from bot.store import Store

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]


def _signature(paths: list[Path]) -> Signature:
    items = []
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        items.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(items))


class RulesHolder:
    """The rule set in force, reloaded on change; thread-safe."""

    def __init__(self, rules_dir: Path) -> None:
        self.rules_dir = rules_dir
        self._lock = threading.Lock()
        self._signature: Signature | None = None
        self._rules: RuleSet | None = None
        self.error: str | None = None

    def _files(self) -> list[Path]:
        files = [p for p in self.rules_dir.glob("*.yaml")
                 if p.name not in ("feeds.yaml", "digests.yaml")]
        return files + list((self.rules_dir / "lists").glob("*.yaml"))

    def load(self) -> RuleSet:
        """Load now; raises ConfigError when the rules are invalid and none is in force."""
        self.refresh()
        if self._rules is None:
            raise ConfigError(self.error or "no rules loaded")
        return self._rules

    def refresh(self) -> bool:
        """Reload if any file changed; True when a new rule set took effect."""
        with self._lock:
            signature = _signature(self._files())
            if signature == self._signature:
                return False
            self._signature = signature
            try:
                rules = load_rules(self.rules_dir)
            except ConfigError as exc:
                self.error = str(exc)
                if self._rules is not None:
                    metrics.RULE_RELOAD_ERRORS.inc()
                    log.error("rules reload failed; keeping the last good rules:\n%s", exc)
                return False
            self._rules = rules
            self.error = None
            log.info("rules loaded: %d rules from %s", len(rules.rules), self.rules_dir)
            return True

    def __call__(self) -> RuleSet:
        with self._lock:
            if self._rules is None:
                raise ConfigError(self.error or "rules not loaded")
            return self._rules


class FeedsSync:
    """Sync ``feeds.yaml`` into the feeds table on start and whenever the file changes."""

    def __init__(self, path: Path, store: Store, clock: Callable[[], datetime]) -> None:
        self.path = path
        self.store = store
        self.clock = clock
        self._signature: Signature | None = None
        self.error: str | None = None

    def refresh(self, *, strict: bool = False) -> bool:
        signature = _signature([self.path])
        if signature == self._signature:
            return False
        try:
            sources = load_feeds(self.path)
        except ConfigError as exc:
            self.error = str(exc)
            if strict:
                raise
            log.error("feeds file invalid; keeping the feeds as they were: %s", exc)
            self._signature = signature
            return False
        report = self.store.sync_feeds(sources, self.clock())
        self._signature = signature
        self.error = None
        if report.added or report.updated or report.removed:
            log.info("feeds synced: %d added, %d updated, %d removed", len(report.added),
                     len(report.updated), len(report.removed))
        return True
