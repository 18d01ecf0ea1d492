"""issue 3: first mentions of tracked list members

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("first_mentions", sa.JSON(), nullable=False,
                                   server_default=sa.text("'[]'")))
    op.create_table(
        "first_mentions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(length=200), nullable=False),
        sa.Column("member", sa.String(length=200), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"],
                                name=op.f("fk_first_mentions_entry_id_entries"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_first_mentions")),
        sa.UniqueConstraint("rule_id", "member", name=op.f("uq_first_mentions_rule_id")),
    )
    with op.batch_alter_table("first_mentions") as batch:
        batch.create_index("ix_first_mentions_seen_at", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_table("first_mentions")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("first_mentions")
