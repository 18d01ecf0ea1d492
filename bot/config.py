"""Settings from the environment (and ``.env`` when present), validated by pydantic-settings.

Secrets are ``SecretStr``: their ``repr`` and ``str`` are masked, so a setting object can be
logged without leaking a token, webhook URL or SMTP password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="POLICYBOT_", env_file=".env", extra="ignore", populate_by_name=True
    )

    database_url: str = "sqlite:///policybot.db"
    rules_dir: Path = Path("rules")

    slack_bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLACK_BOT_TOKEN", "POLICYBOT_SLACK_BOT_TOKEN")
    )
    slack_webhook_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SLACK_WEBHOOK_URL", "POLICYBOT_SLACK_WEBHOOK_URL"),
    )
    slack_api_url: str | None = None
    slack_channel: str | None = None
    slack_ops_channel: str | None = None  # feed health: once when bad, once when recovered

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    smtp_from: str | None = None
    smtp_ca_file: Path | None = None  # trust this CA bundle instead of the system's

    allow_private_addresses: bool = False
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Pipeline knobs: sane defaults, rarely changed.
    backfill_alert_window_hours: float = Field(default=24.0, ge=0)
    retention_days: int = Field(default=365, ge=1)
    # Replicas (PostgreSQL): how long a claim on a feed or an alert holds before another
    # replica may take the work over.
    claim_lease_seconds: float = Field(default=300.0, ge=1)
    # How often `run` looks for due feeds (each feed keeps its own interval).
    poll_tick_seconds: float = Field(default=30.0, ge=1)
    fetch_concurrency: int = Field(default=16, ge=1, le=256)
    fetch_per_host: int = Field(default=2, ge=1, le=16)
    fetch_timeout: float = Field(default=20.0, gt=0)
    fetch_deadline: float = Field(default=60.0, gt=0)
    max_body_mb: float = Field(default=10.0, gt=0)
    # Flood control: top-level Slack alerts per channel per delivery pass; the rest go out
    # as one summary message (issue 4). 0 turns it off.
    max_alerts_per_cycle: int = Field(default=10, ge=0)
    # Feed health (issue 5): a feed failing this long is "stale"; adaptive polling.
    stale_after_hours: float = Field(default=48.0, gt=0)
    adaptive_interval: bool = False
    # Speed (issue 7): which library reads feeds (feedparser is the reference; "fast" is
    # feedparser-rs, the `fast` extra), and how many worker processes parse them (unset:
    # one per core beyond the poller's own, at most 4; 0 parses in the poller's process).
    parser: Literal["feedparser", "fast"] = "feedparser"
    parse_workers: int | None = Field(default=None, ge=0, le=32)

    # The analysts' web console (`policybot web`, issue 8). Users: whitespace-separated
    # NAME:ROLE:ARGON2-HASH (ROLE reader or editor; `policybot web hash-password` makes a
    # hash), or a header set by an authenticating proxy, with the editors named.
    web_users: SecretStr | None = None
    web_user_header: str | None = None
    web_editors: str = ""  # with web_user_header: comma-separated names, or * for everyone
    web_secret: SecretStr | None = None  # signs session cookies; random per start if unset
    web_secure_cookies: bool | None = None  # unset: secure unless bound to loopback

    @field_validator("slack_api_url")
    @classmethod
    def _api_url_ends_with_slash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://slack.com/api/")
        return value if value.endswith("/") else value + "/"

    @field_validator("slack_channel", "slack_ops_channel")
    @classmethod
    def _channel_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        return value

    @property
    def delivery_mode(self) -> Literal["slack", "webhook", "console"]:
        if self.slack_bot_token is not None:
            return "slack"
        if self.slack_webhook_url is not None:
            return "webhook"
        return "console"


def _env_name(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else "?"
    aliases = {"slack_bot_token": "SLACK_BOT_TOKEN", "slack_webhook_url": "SLACK_WEBHOOK_URL"}
    if name in aliases:
        return aliases[name]
    if name.isupper():
        return name
    return "POLICYBOT_" + name.upper()


def load_settings(**overrides: object) -> Settings:
    """Read settings; a missing or malformed value is a one-line ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        # Never echo the input back: it may be a secret.
        raise ConfigError(f"{_env_name(first['loc'])}: {first['msg']}") from None
