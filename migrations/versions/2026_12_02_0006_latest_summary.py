"""the latest window's summary in model_stats

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

``model_stats.latest_summary`` holds the parts of the latest finished result that
``/metrics`` exports for every model (signals, trend, documents, synthetic share), so that a
scrape reads ~1.5 KB per model instead of the whole ~13 KB Score JSON. Filled here from each
model's latest evaluation, 500 models at a time; a model whose summary is still empty (a
worker of the previous revision stored its window) is read from its result by the exporter.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# service.domain.evaluation.SUMMARY_PARTS when this revision was written (a migration must
# not change with the application code)
PARTS = ("signals", "trend", "documents", "synthetic_share")
BATCH = 500


def upgrade() -> None:
    with op.batch_alter_table("model_stats") as batch:
        batch.add_column(sa.Column("latest_summary", sa.JSON(), nullable=True))
    stats = sa.table("model_stats", sa.column("model_id", sa.Integer()),
                     sa.column("latest_evaluation_id", sa.BigInteger()),
                     sa.column("latest_summary", sa.JSON()))
    evaluations = sa.table("evaluations", sa.column("id", sa.BigInteger()),
                           sa.column("result", sa.JSON()))
    conn = op.get_bind()
    after = 0
    while True:
        rows = conn.execute(
            sa.select(stats.c.model_id, evaluations.c.result)
            .join(evaluations, evaluations.c.id == stats.c.latest_evaluation_id)
            .where(stats.c.model_id > after, evaluations.c.result.is_not(None))
            .order_by(stats.c.model_id).limit(BATCH)).all()
        if not rows:
            break
        for model_id, result in rows:
            summary = {p: result[p] for p in PARTS if (result or {}).get(p) is not None}
            conn.execute(stats.update().where(stats.c.model_id == model_id)
                         .values(latest_summary=summary))
        after = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("model_stats") as batch:
        batch.drop_column("latest_summary")
