"""baseline guard and streams

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

``models`` gets ``kind`` ("model" for every existing row, or "stream"), a stream's ``sources``
(baseline ids) and ``max_synthetic_share``, and ``baseline_rejection`` /
``baseline_rejected_at`` (why the automatic baseline was refused). ``baseline_pins`` gets
``accept_collapsed`` (false for every existing pin).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), server_default="model",
                                   nullable=False))
        batch.add_column(sa.Column("sources", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("max_synthetic_share", sa.Float(), nullable=True))
        batch.add_column(sa.Column("baseline_rejection", sa.Text(), nullable=True))
        batch.add_column(sa.Column("baseline_rejected_at", sa.DateTime(timezone=True),
                                   nullable=True))
    with op.batch_alter_table("baseline_pins") as batch:
        batch.add_column(sa.Column("accept_collapsed", sa.Boolean(), server_default=sa.false(),
                                   nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("baseline_pins") as batch:
        batch.drop_column("accept_collapsed")
    with op.batch_alter_table("models") as batch:
        for column in ("baseline_rejected_at", "baseline_rejection", "max_synthetic_share",
                       "sources", "kind"):
            batch.drop_column(column)
