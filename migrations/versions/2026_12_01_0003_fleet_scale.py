"""fleet scale: 64-bit alert ids, retention and soft delete on models, per-model stats

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Upgrades a live database in place:

* ``alert_rules``, ``alert_states``, ``alerts`` ids (and the columns that point at them)
  become BIGINT on PostgreSQL, and so do their sequences: since PostgreSQL 10 a ``serial``
  sequence is created ``AS integer`` and stops at 2^31 - 1 even after the column is
  widened. SQLite's INTEGER PRIMARY KEY is 64-bit already.
* ``models`` gets per-model retention (``samples_days``, ``evaluations_days``), the
  per-metric series opt-in (``metric_series``) and ``deleted_at`` (soft delete).
* ``evaluations`` gets the scoring lease (``lease_expires_at``, renewed by a heartbeat)
  and ``timeouts`` (attempts stopped by the soft time limit).
* ``model_stats`` holds the newest finished evaluation and running totals per model, filled
  here from the evaluations already stored, so ``/metrics`` never groups over history.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# (table, column, has its own sequence)
WIDENED = (
    ("alert_rules", "id", True),
    ("alert_states", "id", True),
    ("alerts", "id", True),
    ("alerts", "rule_id", False),
    ("notifications", "alert_id", False),
)
# the scoring-duration histogram bounds of service.exporter.prometheus at this revision
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _widen(to_type: sa.types.TypeEngine, from_type: sa.types.TypeEngine, seq_as: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, column, has_sequence in WIDENED:
        op.alter_column(table, column, type_=to_type, existing_type=from_type)
        if has_sequence:
            seq = bind.scalar(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                              {"t": table, "c": column})
            if seq:
                op.execute(f"ALTER SEQUENCE {seq} AS {seq_as}")


def _backfill_stats() -> None:
    bind = op.get_bind()
    done = {r.model_id: r for r in bind.execute(sa.text(
        "SELECT model_id, COUNT(*) AS n, COALESCE(SUM(duration_seconds), 0) AS total, "
        "MAX(window_index) AS latest_index FROM evaluations WHERE status = 'done' "
        "GROUP BY model_id"))}
    failed = dict(bind.execute(sa.text(
        "SELECT model_id, COUNT(*) FROM evaluations WHERE status = 'failed' "
        "GROUP BY model_id")).all())
    model_ids = [r[0] for r in bind.execute(sa.text("SELECT id FROM models"))]
    for model_id in model_ids:
        row = done.get(model_id)
        latest_id = latest_index = None
        buckets = [0] * len(DURATION_BUCKETS)
        count, total = 0, 0.0
        if row is not None:
            latest_index = row.latest_index
            latest_id = bind.scalar(sa.text(
                "SELECT MAX(id) FROM evaluations WHERE model_id = :m AND status = 'done' "
                "AND window_index = :w"), {"m": model_id, "w": latest_index})
            durations = [d for (d,) in bind.execute(sa.text(
                "SELECT duration_seconds FROM evaluations WHERE model_id = :m AND "
                "status = 'done' AND duration_seconds IS NOT NULL"), {"m": model_id})]
            buckets = [sum(1 for d in durations if d <= b) for b in DURATION_BUCKETS]
            count, total = len(durations), float(sum(durations))
        bind.execute(sa.text(
            "INSERT INTO model_stats (model_id, latest_evaluation_id, latest_window_index, "
            "evaluations_done, evaluations_failed, duration_buckets, duration_count, "
            "duration_sum) VALUES (:m, :lid, :lw, :done, :failed, :buckets, :count, :total)"),
            {"m": model_id, "lid": latest_id, "lw": latest_index,
             "done": int(row.n) if row is not None else 0,
             "failed": int(failed.get(model_id, 0)), "buckets": json.dumps(buckets),
             "count": count, "total": total})


def upgrade() -> None:
    _widen(sa.BigInteger(), sa.Integer(), "bigint")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("samples_days", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("evaluations_days", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("metric_series", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("timeouts", sa.Integer(), server_default="0",
                                      nullable=False))
    op.create_table(
        "model_stats",
        sa.Column("model_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("latest_evaluation_id", sa.BigInteger(), nullable=True),
        sa.Column("latest_window_index", sa.Integer(), nullable=True),
        sa.Column("evaluations_done", sa.BigInteger(), nullable=False),
        sa.Column("evaluations_failed", sa.BigInteger(), nullable=False),
        sa.Column("duration_buckets", sa.JSON(), nullable=False),
        sa.Column("duration_count", sa.BigInteger(), nullable=False),
        sa.Column("duration_sum", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"],
                                name=op.f("fk_model_stats_model_id_models"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_model_stats")),
    )
    _backfill_stats()


def downgrade() -> None:
    op.drop_table("model_stats")
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.drop_column("timeouts")
        batch_op.drop_column("lease_expires_at")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("metric_series")
        batch_op.drop_column("evaluations_days")
        batch_op.drop_column("samples_days")
    _widen(sa.Integer(), sa.BigInteger(), "integer")
