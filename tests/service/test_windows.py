"""Window planning: contiguous, never overlapping, never skipping, planned once."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from service.domain.windows import PendingSample, WindowPolicy, WindowSpan, close_windows
from tests.service.pipeline_fixtures import (
    add_model,
    add_reference,
    assert_partition,
    ingest,
    sample_ids,
    windows_of,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pending(n: int, start_id: int = 1, age_seconds: float = 0.0) -> list[PendingSample]:
    return [PendingSample(start_id + i, T0 - timedelta(seconds=age_seconds)) for i in range(n)]


# ---------------------------------------------------------------- the pure rule


def test_full_windows_close_at_size_and_the_rest_waits():
    spans = close_windows(pending(25), WindowPolicy(10, None, 1), now=T0)
    assert spans == [WindowSpan(1, 10, 10), WindowSpan(11, 20, 10)]


def test_old_remainder_closes_once_it_has_min_size():
    policy = WindowPolicy(size=10, max_age_seconds=60, min_size=4)
    old = pending(7, age_seconds=61)
    assert close_windows(old, policy, now=T0) == [WindowSpan(1, 7, 7)]
    # too few: it keeps waiting however old it is
    assert close_windows(old[:3], policy, now=T0) == []
    # young enough: waits for more samples
    assert close_windows(pending(7, age_seconds=59), policy, now=T0) == []


def test_age_rule_waits_when_the_pending_list_was_truncated():
    policy = WindowPolicy(size=10, max_age_seconds=1, min_size=1)
    spans = close_windows(pending(15, age_seconds=100), policy, now=T0, complete=False)
    assert spans == [WindowSpan(1, 10, 10)]


def test_ids_with_gaps_are_windowed_by_count_not_by_id_arithmetic():
    rows = [PendingSample(i, T0) for i in (3, 4, 9, 10, 11, 40, 41)]
    spans = close_windows(rows, WindowPolicy(3, None, 1), now=T0)
    assert spans == [WindowSpan(3, 9, 3), WindowSpan(10, 40, 3)]


@pytest.mark.parametrize("seed", range(20))
def test_random_sequences_are_partitioned_without_gaps_or_overlaps(seed):
    rng = random.Random(seed)
    ids = sorted(rng.sample(range(1, 10_000), rng.randint(0, 300)))
    rows = [PendingSample(i, T0 - timedelta(seconds=rng.randint(0, 100))) for i in ids]
    policy = WindowPolicy(rng.randint(1, 50), rng.choice([None, 30]), rng.randint(1, 10))
    spans = close_windows(rows, policy, now=T0)
    covered = [i for s in spans for i in ids if s.first_id <= i <= s.last_id]
    assert covered == ids[:len(covered)]  # a prefix, each id once
    assert sum(s.count for s in spans) == len(covered)
    assert all(s.count == policy.size for s in spans[:-1])
    assert len(ids) - len(covered) < policy.size


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="positive"):
        close_windows(pending(3), WindowPolicy(0, None, 1), now=T0)


# ---------------------------------------------------------------- planning in the database


def _plan(model_id: int, now: datetime | None = None) -> list[int]:
    from service.domain.db import session_factory
    from service.domain.windows import plan_model

    with session_factory()() as session, session.begin():
        return plan_model(session, model_id, now)


def test_planning_closes_each_window_once(service_env):
    model_id = add_model("bot", add_reference(), size=10)
    ingest("bot", [f"text {i}" for i in range(25)])
    created = _plan(model_id)
    assert len(created) == 2
    assert _plan(model_id) == []  # nothing new: planning is idempotent
    ingest("bot", [f"more {i}" for i in range(5)], prefix="m")
    assert len(_plan(model_id)) == 1
    assert [w[3] for w in windows_of(model_id)] == [10, 10, 10]
    assert_partition(model_id, allow_tail=False)


def test_window_times_and_model_counters(service_env):
    from service.domain.db import session_scope
    from service.domain.tables import Evaluation, MonitoredModel

    model_id = add_model("bot", add_reference(), size=4)
    ingest("bot", [f"t{i}" for i in range(9)])
    with session_scope() as session:
        before = session.get(MonitoredModel, model_id).updated_at
    _plan(model_id)
    with session_scope() as session:
        model = session.get(MonitoredModel, model_id)
        assert model.next_window_index == 2
        assert model.windowed_through_sample_id == sample_ids(model_id)[7]
        assert model.updated_at == before  # traffic does not count as a configuration change
        rows = session.scalars(select(Evaluation).order_by(Evaluation.window_index)).all()
        assert all(e.status == "pending" and e.attempts == 0 for e in rows)
        assert all(e.window_start <= e.window_end for e in rows)


def test_max_age_closes_a_partial_window(service_env):
    model_id = add_model("bot", add_reference(), size=100, max_age=60, min_size=5)
    ingest("bot", [f"t{i}" for i in range(3)])
    later = datetime.now(UTC) + timedelta(seconds=120)
    assert _plan(model_id, later) == []  # old, but fewer than min_size
    ingest("bot", [f"u{i}" for i in range(4)], prefix="u")
    assert _plan(model_id) == []  # enough, but not old yet
    assert len(_plan(model_id, later)) == 1
    assert [w[3] for w in windows_of(model_id)] == [7]
    assert_partition(model_id, allow_tail=False)


def test_reference_switch_applies_to_new_windows_only(service_env):
    from service.domain.db import session_scope
    from service.domain.tables import Evaluation, MonitoredModel

    old_ref, new_ref = add_reference("a"), add_reference("b")
    model_id = add_model("bot", old_ref, size=5)
    ingest("bot", [f"t{i}" for i in range(5)])
    _plan(model_id)
    with session_scope() as session:
        session.get(MonitoredModel, model_id).reference_id = new_ref
    ingest("bot", [f"u{i}" for i in range(5)], prefix="u")
    _plan(model_id)
    with session_scope() as session:
        refs = session.scalars(select(Evaluation.reference_id)
                               .order_by(Evaluation.window_index)).all()
    assert refs == [old_ref, new_ref]


def test_models_are_planned_independently(pipeline_env):
    from service.dispatch import plan_due_windows

    ref = add_reference()
    a, b = add_model("a", ref, size=3), add_model("b", ref, size=4)
    ingest("a", [f"t{i}" for i in range(7)])
    ingest("b", [f"t{i}" for i in range(7)])
    ingest("a", [f"u{i}" for i in range(2)], prefix="u")
    created = plan_due_windows()
    assert len(created) == 3 + 1
    assert [w[3] for w in windows_of(a)] == [3, 3, 3]
    assert [w[3] for w in windows_of(b)] == [4]
    assert_partition(a)
    assert_partition(b)


def test_concurrent_ingest_and_planning_put_every_sample_in_exactly_one_window(pipeline_env):
    """Several ingest threads and two planners race; in the end the windows partition the
    samples exactly (the model row lock orders ingest and planning)."""
    from service.dispatch import plan_due_windows

    model_id = add_model("bot", add_reference(), size=7)
    errors: list[BaseException] = []
    done = threading.Event()

    def ingester(tag: str) -> None:
        try:
            for batch in range(15):
                ingest("bot", [f"{tag}{batch}-{i}" for i in range(3)], prefix=f"{tag}{batch}-")
        except Exception as exc:  # noqa: BLE001 -- reported by the main thread
            errors.append(exc)

    def planner() -> None:
        try:
            while not done.is_set():
                plan_due_windows()
        except Exception as exc:  # noqa: BLE001 -- reported by the main thread
            errors.append(exc)

    ingesters = [threading.Thread(target=ingester, args=(t,)) for t in "abcd"]
    planners = [threading.Thread(target=planner) for _ in range(2)]
    for t in ingesters + planners:
        t.start()
    for t in ingesters:
        t.join(120)
    done.set()
    for t in planners:
        t.join(120)
    assert not errors, errors
    plan_due_windows()
    assert len(sample_ids(model_id)) == 4 * 15 * 3
    assert [w[3] for w in windows_of(model_id)] == [7] * (180 // 7)
    assert_partition(model_id)


# PostgreSQL only: SQLite has one writer at a time, so its ids are committed in order.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_uncommitted_batch_is_not_skipped(service_env, database_url):
    """PostgreSQL hands out ids before commit. A batch that holds ids but has not committed
    yet must end up in a window, even though larger ids committed first."""
    from sqlalchemy import text

    from service.domain.db import session_factory
    from service.domain.ingest import ingest_samples
    from service.domain.schemas import SampleIn
    from service.settings import get_settings

    model_id = add_model("bot", add_reference(), size=4)
    ingest("bot", ["a0", "a1"], prefix="a")
    slow = session_factory()()
    # a batch that took the model lock and its ids, but has not committed yet
    slow.execute(text("SELECT id FROM models WHERE id = :id FOR UPDATE"), {"id": model_id})
    slow.execute(text("INSERT INTO samples (model_id, client_id, text, received_at) "
                      "VALUES (:m, 'slow', 'slow text', now())"), {"m": model_id})
    # a second batch draws larger ids; it waits for the lock, so it runs in a thread
    fast = threading.Thread(target=lambda: ingest_samples(
        session_factory()(), get_settings(), "bot",
        [SampleIn(id=f"b{i}", text=f"b{i}") for i in range(6)]))
    fast.start()
    # while the slow batch holds the lock, the planner leaves the model alone
    assert _plan(model_id) == []
    slow.commit()
    slow.close()
    fast.join(30)
    assert not fast.is_alive()
    _plan(model_id)
    assert [w[3] for w in windows_of(model_id)] == [4, 4]  # 9 samples: one still waits
    assert_partition(model_id)
    from service.domain.db import session_scope
    from service.domain.tables import Evaluation, Sample

    with session_scope() as session:
        slow_id = session.scalar(select(Sample.id).where(Sample.client_id == "slow"))
        holders = session.scalars(select(Evaluation.window_index).where(
            Evaluation.first_sample_id <= slow_id, Evaluation.last_sample_id >= slow_id)).all()
    assert len(holders) == 1
