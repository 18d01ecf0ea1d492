"""issue 5: fetch robustness and feed health

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_COLUMNS = ("declared_url", "redirect_url", "redirect_polls", "failing_since",
            "rhythm_seconds", "last_entry_at", "announced_state", "announced_at")


def upgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        # feeds.yaml's URL, kept apart from `url` once a permanent redirect is adopted.
        batch.add_column(sa.Column("declared_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("redirect_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("redirect_polls", sa.Integer(), nullable=False,
                                   server_default=sa.text("0")))
        batch.add_column(sa.Column("failing_since", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("rhythm_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("last_entry_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("announced_state", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("announced_at", sa.DateTime(), nullable=True))
    op.execute("UPDATE feeds SET declared_url = url")


def downgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
