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
    # Issue 5, feed health. `url` is what is polled; `declared_url` what feeds.yaml says
    # (they differ once a 301/308 seen on 3 polls in a row is adopted).
    Column("declared_url", Text),
    Column("redirect_url", Text),  # the permanent redirect being watched …
    Column("redirect_polls", Integer, nullable=False, default=0),  # … on so many polls
    Column("failing_since", UTCDateTime),  # first failure of the current run of failures
    Column("rhythm_seconds", Integer),  # median gap between items (bot.schedule)
    Column("last_entry_at", UTCDateTime),  # newest item date seen, never in the future
    Column("announced_state", String(20)),  # the bad health told to the ops channel
    Column("announced_at", UTCDateTime),
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

# The outbox: every message the bot posts. pending -> sending -> sent | failed.
# kind: alert (one per entry, channel and set of newly matching rules) | reply (a thread reply
# under parent_id: another source, or what changed) | update (chat.update of parent_id) |
# summary (flood control; the alerts it lists name it in summary_id). Issue 4, DESIGN.md.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("entry_id", Integer, ForeignKey("entries.id", ondelete="CASCADE")),  # None: summary
    Column("kind", String(20), nullable=False, default="alert", server_default="alert"),
    Column("parent_id", Integer, ForeignKey("alerts.id", ondelete="CASCADE")),
    Column("summary_id", Integer, ForeignKey("alerts.id", ondelete="SET NULL")),
    Column("detail", JSON),  # what a reply says: the duplicate's reason, the change
    Column("dedupe_key", String(255), nullable=False, unique=True),  # written once
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
)
Index("ix_alerts_status_next_attempt_at", alerts.c.status, alerts.c.next_attempt_at)
Index("ix_alerts_entry_id", alerts.c.entry_id)
Index("ix_alerts_parent_id", alerts.c.parent_id)
Index("ix_alerts_summary_id", alerts.c.summary_id)

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

# One row per (digest, period): claimed (INSERT … ON CONFLICT DO NOTHING) before the mail is
# sent, marked sent after the server's 250, so a period is mailed once (issue 6).
# status: sending -> sent | retry (transient, next_attempt_at) | failed (permanent) | skipped.
digest_sends = Table(
    "digest_sends",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", String(200), nullable=False),
    Column("period_start", UTCDateTime, nullable=False),
    Column("period_end", UTCDateTime, nullable=False),  # the scheduled send time
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("sends", Integer, nullable=False, default=0),  # times mailed (--force adds one)
    Column("claimed_at", UTCDateTime),
    Column("lease_until", UTCDateTime),
    Column("next_attempt_at", UTCDateTime),
    Column("sent_at", UTCDateTime),
    Column("items", Integer),
    Column("recipients", JSON, nullable=False, default=list),
    Column("message_id", Text),
    Column("error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("digest", "period_end"),
)
Index("ix_digest_sends_status", digest_sends.c.status)

# Every change made in the web console (issue 8): who, when, which rule or feed, the diff.
# action: create | save | save-experimental | enable | disable | delete | add-feed
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("user", String(200), nullable=False),
    Column("action", String(40), nullable=False),
    Column("subject", String(200), nullable=False),  # the rule id, or the feed's name
    Column("path", Text, nullable=False),  # the file written, relative to the rules directory
    Column("message", Text, nullable=False),
    Column("diff", Text, nullable=False),  # unified diff of the file, before → after
    Column("commit", String(64)),  # the git commit made in rules/, if it is a repository
)
Index("ix_audit_log_subject", audit_log.c.subject)
