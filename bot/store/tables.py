"""The schema, as SQLAlchemy Core tables. Alembic migrations in ``migrations/`` create it;
``tests/test_migrations.py`` proves the two agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite has no time zones; storing naive UTC and re-attaching UTC on the way out keeps
    comparisons correct on both databases.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


feeds = Table(
    "feeds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("interval_seconds", Integer, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("language", String(35)),
    # enabled: as declared in feeds.yaml; removed_at: no longer in feeds.yaml (history kept).
    Column("enabled", Boolean, nullable=False),
    Column("removed_at", UTCDateTime),
    Column("gone", Boolean, nullable=False, default=False),
    Column("title", Text),
    # Validators exactly as the server last sent them (RFC 9110 §13.1): never built locally.
    Column("etag", Text),
    Column("last_modified", Text),
    Column("next_poll_at", UTCDateTime, nullable=False),
    Column("retry_after_until", UTCDateTime),
    Column("last_polled_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("first_success_at", UTCDateTime),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("last_error_kind", String(40)),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("lease_until", UTCDateTime),
    Column("lease_owner", String(100)),
    Column("created_at", UTCDateTime, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("feed_id", Integer, ForeignKey("feeds.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(512), nullable=False),
    Column("title", Text, nullable=False),
    Column("link", Text),
    Column("author", Text),
    Column("categories", JSON, nullable=False),
    Column("summary", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("published", UTCDateTime),
    Column("updated", UTCDateTime),
    Column("language", String(35)),
    Column("content_hash", String(64), nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("changed_at", UTCDateTime),
    UniqueConstraint("feed_id", "key"),
)
Index("ix_entries_first_seen_at", entries.c.first_seen_at)

matches = Table(
    "matches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("entry_id", Integer, ForeignKey("entries.id", ondelete="CASCADE"), nullable=False),
    Column("rule_id", String(200), nullable=False),
    Column("rule_version", String(64), nullable=False),
    Column("hits", JSON, nullable=False),
    Column("matched_at", UTCDateTime, nullable=False),
    UniqueConstraint("entry_id", "rule_id"),
)
Index("ix_matches_rule_id", matches.c.rule_id)

# The outbox: one row per (entry, channel). pending -> sending -> sent | failed.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("entry_id", Integer, ForeignKey("entries.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(200), nullable=False),
    Column("rules", JSON, nullable=False),
    Column("hits", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_at", UTCDateTime),
    Column("sent_at", UTCDateTime),
    Column("first_mentions", JSON, nullable=False, default=list),  # tracked members new here
    Column("posted_channel", String(200)),  # where Slack says it went (a channel ID)
    Column("ts", String(40)),
    Column("error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("entry_id", "channel"),
)
Index("ix_alerts_status_next_attempt_at", alerts.c.status, alerts.c.next_attempt_at)

# `track: LIST` — the first entry in which a rule named each list member (DESIGN.md, Rules).
first_mentions = Table(
    "first_mentions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("rule_id", String(200), nullable=False),
    Column("member", String(200), nullable=False),  # the list entry's canonical name
    Column("entry_id", Integer, ForeignKey("entries.id", ondelete="CASCADE"), nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
    UniqueConstraint("rule_id", "member"),
)
Index("ix_first_mentions_seen_at", first_mentions.c.seen_at)
