"""band cache: computed bands shared by worker processes and kept across restarts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "band_cache",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("profile_key", sa.String(length=64), nullable=False),
        sa.Column("n_docs", sa.Integer(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("matrix", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_band_cache")),
        sa.UniqueConstraint(
            "profile_key", "n_docs", "budget", name=op.f("uq_band_cache_profile_key_n_docs_budget")
        ),
    )
    op.create_index(op.f("ix_band_cache_used_at"), "band_cache", ["used_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_band_cache_used_at"), table_name="band_cache")
    op.drop_table("band_cache")
