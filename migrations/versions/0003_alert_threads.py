"""issue 4: alert threads, duplicates, changes, flood control

The outbox (``alerts``) now holds every message the bot posts, not only top-level alerts:
``kind`` is alert | reply | update | summary; a reply or an update names the alert it belongs
to (``parent_id``); an alert folded into a flood-control summary names it (``summary_id``);
``detail`` carries what a reply says (why it is a duplicate, what changed). One entry may now
have several rows in a channel (its alert, a change reply, a second alert for a rule that
matches only after a change), so the unique (entry_id, channel) becomes ``dedupe_key``,
unique: what this row is about, written once. Summaries belong to no entry.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=20), nullable=False,
                                   server_default="alert"))
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("summary_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("detail", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("dedupe_key", sa.String(length=255), nullable=True))
    # Existing rows are alerts, unique per (entry, channel): that pair is their key.
    op.execute("UPDATE alerts SET dedupe_key = 'alert:' || CAST(entry_id AS VARCHAR(20)) "
               "|| ':' || channel")
    with op.batch_alter_table("alerts") as batch:
        batch.alter_column("dedupe_key", existing_type=sa.String(length=255), nullable=False)
        batch.alter_column("entry_id", existing_type=sa.Integer(), nullable=True)
        batch.drop_constraint("uq_alerts_entry_id", type_="unique")
        batch.create_unique_constraint("uq_alerts_dedupe_key", ["dedupe_key"])
        batch.create_foreign_key("fk_alerts_parent_id_alerts", "alerts", ["parent_id"], ["id"],
                                 ondelete="CASCADE")
        batch.create_foreign_key("fk_alerts_summary_id_alerts", "alerts", ["summary_id"],
                                 ["id"], ondelete="SET NULL")
        batch.create_index("ix_alerts_entry_id", ["entry_id"], unique=False)
        batch.create_index("ix_alerts_parent_id", ["parent_id"], unique=False)
        batch.create_index("ix_alerts_summary_id", ["summary_id"], unique=False)


def downgrade() -> None:
    op.execute("DELETE FROM alerts WHERE kind <> 'alert'")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_index("ix_alerts_summary_id")
        batch.drop_index("ix_alerts_parent_id")
        batch.drop_index("ix_alerts_entry_id")
        batch.drop_constraint("fk_alerts_summary_id_alerts", type_="foreignkey")
        batch.drop_constraint("fk_alerts_parent_id_alerts", type_="foreignkey")
        batch.drop_constraint("uq_alerts_dedupe_key", type_="unique")
        batch.alter_column("entry_id", existing_type=sa.Integer(), nullable=False)
        batch.create_unique_constraint("uq_alerts_entry_id", ["entry_id", "channel"])
        batch.drop_column("dedupe_key")
        batch.drop_column("detail")
        batch.drop_column("summary_id")
        batch.drop_column("parent_id")
        batch.drop_column("kind")
