"""Helpers shared by the pipeline, window and baseline tests.

Rows are stored with the real service functions (``service.domain.ingest.ingest_samples`` takes
the model lock the planner relies on); references hold real profiles where scoring needs
them, and a placeholder profile where a test only plans windows.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from tests.support import REPO, VENV_BIN

# windows are kept small so the tests stay fast; the band is still computed on real
# human documents (the shipped fortunes)
REFERENCE_SIZE = 300


def add_reference(name: str = "fortunes", profile=None, documents: list[str] | None = None,
                  version: int = 1) -> int:
    """A reference row; ``profile`` None stores a placeholder (planning never reads it)."""
    from service.domain.db import session_scope
    from service.domain.tables import Reference

    docs = documents or ["placeholder"]
    with session_scope() as session:
        row = Reference(
            name=name, version=version,
            sha256=profile.sha256 if profile is not None else f"{name}-{version}".ljust(64, "0"),
            document_count=profile.document_count if profile is not None else len(docs),
            token_count=profile.token_count if profile is not None else 1,
            documents_gz=gzip.compress(json.dumps(docs).encode()),
            profile=profile.to_bytes() if profile is not None else b"",
        )
        session.add(row)
        session.flush()
        return row.id


def add_model(name: str, reference_id: int, size: int = 10, max_age: int | None = None,
              min_size: int = 1, auto_baseline_windows: int = 0) -> int:
    from service.domain.db import session_scope
    from service.domain.tables import MonitoredModel

    with session_scope() as session:
        row = MonitoredModel(
            name=name, reference_id=reference_id, window_size=size,
            window_max_age_seconds=max_age, window_min_size=min_size,
            auto_baseline_windows=auto_baseline_windows, samples_ingested=0,
            windowed_through_sample_id=0, next_window_index=0,
        )
        session.add(row)
        session.flush()
        return row.id


def ingest(model: str, texts: list[str], prefix: str = "s", start: int = 0) -> int:
    """Store samples through the real ingest function (one batch); returns accepted."""
    from service.domain.db import session_factory
    from service.domain.ingest import ingest_samples
    from service.domain.schemas import SampleIn
    from service.settings import get_settings

    batch = [SampleIn(id=f"{prefix}{start + i}", text=t) for i, t in enumerate(texts)]
    with session_factory()() as session:
        return ingest_samples(session, get_settings(), model, batch).accepted


def windows_of(model_id: int) -> list[tuple[int, int, int, int]]:
    """(window_index, first_sample_id, last_sample_id, sample_count) in index order."""
    from service.domain.db import session_scope
    from service.domain.tables import Evaluation

    with session_scope() as session:
        return [tuple(r) for r in session.execute(
            select(Evaluation.window_index, Evaluation.first_sample_id,
                   Evaluation.last_sample_id, Evaluation.sample_count)
            .where(Evaluation.model_id == model_id).order_by(Evaluation.window_index))]


def sample_ids(model_id: int) -> list[int]:
    from service.domain.db import session_scope
    from service.domain.tables import Sample

    with session_scope() as session:
        return list(session.scalars(select(Sample.id).where(Sample.model_id == model_id)
                                    .order_by(Sample.id)))


def assert_partition(model_id: int, allow_tail: bool = True) -> None:
    """Windows are contiguous, non-overlapping id ranges covering a prefix of the samples,
    and each window's sample_count is the number of samples in its range."""
    ids = sample_ids(model_id)
    covered: list[int] = []
    previous_last = 0
    for index, (window_index, first, last, count) in enumerate(windows_of(model_id)):
        assert window_index == index
        inside = [i for i in ids if first <= i <= last]
        assert len(inside) == count, (first, last, count, len(inside))
        assert inside and inside[0] == first and inside[-1] == last
        # nothing between the previous window and this one
        assert not [i for i in ids if previous_last < i < first]
        covered.extend(inside)
        previous_last = last
    assert covered == ids[:len(covered)]
    if not allow_tail:
        assert covered == ids


def count_rows(table, **where) -> int:
    from service.domain.db import session_scope

    with session_scope() as session:
        stmt = select(func.count()).select_from(table)
        for key, value in where.items():
            stmt = stmt.where(getattr(table, key) == value)
        return session.scalar(stmt)


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.2, on_timeout: Callable[[], str] | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    extra = f"\n{on_timeout()}" if on_timeout else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run([str(VENV_BIN / "collapsewatch"), *args], check=False,
                          capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def pipeline_env(service_env):
    """service_env with the shared Celery app pointed at this test's broker."""
    from service.broker import reconfigure

    reconfigure()
    yield service_env
    reconfigure()


WINDOW = 60  # documents per window in these tests (above metrics' 50-document minimum)


@pytest.fixture(scope="session")
def window_documents(human_documents) -> list[str]:
    """Fresh human documents (not in the reference) for windows."""
    return human_documents[5000:5000 + 20 * WINDOW]


@pytest.fixture(scope="session")
def window_result(reference_profile, window_documents) -> dict:
    """A real Score JSON of one window (for tests about storing and reading results)."""
    import metrics

    return metrics.score(window_documents[:WINDOW], reference_profile)


def score_now(evaluation_id: int):
    """Run the scoring task's logic for one evaluation in this process."""
    from service.domain import evaluation as scoring
    from service.domain.db import session_factory
    from service.settings import get_settings

    return scoring.score_window(evaluation_id, get_settings(), session_factory())


def plan_now() -> list[int]:
    """Plan due windows in this process without enqueueing (the tests drive scoring)."""
    from service.domain.db import session_factory
    from service.domain.windows import models_with_unwindowed_samples, plan_model

    maker = session_factory()
    with maker() as session:
        ids = models_with_unwindowed_samples(session)
    created: list[int] = []
    for model_id in ids:
        with maker() as session, session.begin():
            created.extend(plan_model(session, model_id))
    return created


def planned() -> list[int]:
    """Plan what is due (like plan_now), then every evaluation id, oldest first: windows
    filled through the API are already planned by the ingest request itself."""
    from service.domain.db import session_scope
    from service.domain.tables import Evaluation

    plan_now()
    with session_scope() as session:
        return list(session.scalars(select(Evaluation.id).order_by(Evaluation.id)))


def evaluation(evaluation_id: int):
    from service.domain.db import session_scope
    from service.domain.tables import Evaluation

    with session_scope() as session:
        row = session.get(Evaluation, evaluation_id)
        session.expunge(row)
        return row
