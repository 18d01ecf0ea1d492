"""One exception tree for policybot.

    BotError
     ├── ConfigError              a setting, feeds.yaml or a rule file is wrong
     │    └── RuleError           ... with the file, line and column at fault
     ├── FeedError(url)           one feed could not be read
     │    ├── FetchError          network, HTTP status, size or time limits
     │    └── ParseError          the body is not a feed we can read
     ├── StorageError             the database refused or went away
     └── DeliveryError(channel)   Slack refused or failed; ``permanent`` says whether to retry

Third-party errors are translated once, at the boundary (``raise FetchError(...) from exc``);
expected per-feed failures are recorded on the feed as data and the cycle goes on.
"""

from __future__ import annotations

from pathlib import Path


class BotError(Exception):
    """Root of every error policybot raises on purpose."""


class ConfigError(BotError):
    """A setting or a configuration file is invalid. ``str()`` is a one-line message."""

    def __init__(
        self, message: str, *, path: Path | str | None = None, line: int | None = None,
        col: int | None = None,
    ) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        self.col = col
        super().__init__(self.location_prefix() + message)

    def location_prefix(self) -> str:
        if self.path is None:
            return ""
        where = str(self.path)
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return where + ": "


class RuleError(ConfigError):
    """A rule or term-list file is invalid: ``path:line:col: message``."""


class FeedError(BotError):
    """One feed could not be fetched or parsed; carries the URL and a short ``kind``."""

    kind = "feed"

    def __init__(self, url: str, message: str, *, status: int | None = None) -> None:
        self.url = url
        self.message = message
        self.status = status
        super().__init__(f"{url}: {message}")


class FetchError(FeedError):
    kind = "fetch"


class ParseError(FeedError):
    kind = "parse"


class StorageError(BotError):
    """The database failed in an operational way (unreachable, disk full, locked)."""


class DeliveryError(BotError):
    """Slack refused or failed a message."""

    def __init__(
        self, channel: str, message: str, *, permanent: bool, retry_after: float | None = None
    ) -> None:
        self.channel = channel
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(f"{channel}: {message}")
