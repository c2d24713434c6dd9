"""Production mode with real processes: `collapsewatch worker` and `collapsewatch beat` on
Redis + PostgreSQL. Crashes, a broker outage, duplicate messages, several workers.

Samples are stored from this process with the real ingest function (the one behind
POST /samples, which takes the model lock the planner relies on).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.domain.tables import Evaluation, Score
from tests.service.api_fixtures import store_reference
from tests.service.pipeline_fixtures import (
    WINDOW,
    add_model,
    assert_partition,
    count_rows,
    ingest,
    sample_ids,
    wait_until,
)
from tests.support import free_port, process

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    env: dict[str, str]
    logs: Path

    def worker(self, name: str, concurrency: int = 1):
        return process(["collapsewatch", "worker", f"--concurrency={concurrency}",
                        f"--hostname={name}@%h"], self.logs / f"{name}.log", env=self.env)

    def beat(self, name: str = "beat"):
        # several beats (several hosts) each keep their own schedule file
        return process(["collapsewatch", "beat", f"--schedule={self.logs / name}.schedule"],
                       self.logs / f"{name}.log", env=self.env)

    def log_tail(self) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def _stack(monkeypatch, tmp_path: Path, database_url: str, broker_url: str,
           **settings: object) -> Stack:
    from service.broker import reconfigure
    from service.domain.db import reset_engines
    from service.settings import get_settings

    env = {
        "COLLAPSEWATCH_DATABASE_URL": database_url,
        "COLLAPSEWATCH_BROKER_URL": broker_url,
        "COLLAPSEWATCH_DATA_DIR": str(tmp_path / "data"),
        "COLLAPSEWATCH_PLAN_INTERVAL_SECONDS": "0.5",
        "COLLAPSEWATCH_LOG_JSON": "1",
    }
    env.update({f"COLLAPSEWATCH_{k.upper()}": str(v) for k, v in settings.items()})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    reset_engines()
    reconfigure()
    return Stack(env, tmp_path / "logs")


@pytest.fixture
def make_stack(monkeypatch, tmp_path):
    """make_stack(database_url, broker_url, **settings): env for this process and the
    worker/beat processes; everything is reset afterwards."""
    from service.broker import reconfigure
    from service.domain.db import reset_engines
    from service.settings import get_settings

    yield lambda database_url, broker_url, **settings: _stack(
        monkeypatch, tmp_path, database_url, broker_url, **settings)
    monkeypatch.undo()
    get_settings.cache_clear()
    reset_engines()
    reconfigure()


@pytest.fixture
def stack(make_stack, postgres_url, redis_url) -> Stack:
    return make_stack(postgres_url, redis_url, reaper_timeout_seconds=120)


def _model(name: str, reference_id: int, size: int = WINDOW) -> int:
    return add_model(name, reference_id, size=size, min_size=1)


def _statuses(model_id: int | None = None) -> dict[str, int]:
    from service.domain.db import session_scope

    with session_scope() as session:
        stmt = select(Evaluation.status, func.count()).group_by(Evaluation.status)
        if model_id is not None:
            stmt = stmt.where(Evaluation.model_id == model_id)
        return dict(session.execute(stmt).all())


def _evaluations(model_id: int | None = None) -> list[Evaluation]:
    from service.domain.db import session_scope

    with session_scope() as session:
        stmt = select(Evaluation).order_by(Evaluation.id)
        if model_id is not None:
            stmt = stmt.where(Evaluation.model_id == model_id)
        rows = list(session.scalars(stmt))
        session.expunge_all()
        return rows


def _assert_one_score_set_each(evaluations: list[Evaluation]) -> None:
    """Every evaluation is done and has exactly the rows of its own Score JSON."""
    from service.domain.db import session_scope

    with session_scope() as session:
        counts = dict(session.execute(select(Score.evaluation_id, func.count())
                                      .group_by(Score.evaluation_id)).all())
    for e in evaluations:
        assert e.status == "done", (e.id, e.status, e.error)
        expected = len(e.result["metrics"]) + len(e.result["signals"])
        assert counts.get(e.id) == expected, (e.id, counts.get(e.id), expected)


@pytest.fixture
def reference_id(reference_profile, reference_documents):
    def make() -> int:
        return store_reference(reference_profile, reference_documents)

    return make


@pytest.fixture(scope="module")
def lexical_profile(reference_documents):
    """The same documents without embeddings, for tests about who scores what rather than
    how: a 60-document window then scores in ~0.03 s instead of ~1 s (embedding it)."""
    import metrics

    return metrics.build_reference(reference_documents, "fortunes-lexical", embedder=None)


@pytest.fixture
def lexical_reference_id(lexical_profile, reference_documents):
    def make() -> int:
        return store_reference(lexical_profile, reference_documents, name="fortunes-lexical")

    return make


# ---------------------------------------------------------------- crash of a worker


def test_worker_killed_mid_scoring_is_recovered_with_one_score_set(
        make_stack, postgres_url, redis_url, reference_id, human_documents):
    stack = make_stack(postgres_url, redis_url, reaper_timeout_seconds=6)
    # a bigger window so that scoring takes long enough to be interrupted
    model_id = _model("bot", reference_id(), size=400)
    with stack.beat(), ExitStack() as workers:
        first = workers.enter_context(stack.worker("w1"))
        ingest("bot", human_documents[6000:6400])
        wait_until(lambda: _statuses(model_id).get("running"), 120, "scoring to start",
                   interval=0.02, on_timeout=stack.log_tail)
        first.kill9()
        (killed,) = _evaluations(model_id)
        assert killed.status == "running" and killed.attempts == 1
        assert count_rows(Score, evaluation_id=killed.id) == 0  # it died mid-window

        workers.enter_context(stack.worker("w2"))
        wait_until(lambda: _statuses(model_id) == {"done": 1}, 180, "the window to be scored",
                   on_timeout=stack.log_tail)
    (done,) = _evaluations(model_id)
    assert done.id == killed.id and done.attempts >= 2
    _assert_one_score_set_each([done])


# ---------------------------------------------------------------- broker outage


@contextmanager
def redis_server(port: int, workdir: Path) -> Iterator[subprocess.Popen]:
    from tests.conftest import need_program

    binary = need_program("redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        wait_until(lambda: _ping(client), 20, "redis-server to answer", interval=0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(20)


def _ping(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def test_broker_outage_stores_samples_and_scores_the_backlog_when_it_returns(
        make_stack, tmp_path, postgres_url, lexical_reference_id, window_documents):
    port = free_port()
    stack = make_stack(postgres_url, f"redis://127.0.0.1:{port}/0", reaper_timeout_seconds=30)
    model_id = _model("bot", lexical_reference_id())
    with stack.beat(), stack.worker("w1"):
        with redis_server(port, tmp_path / "redis1"):
            ingest("bot", window_documents[:WINDOW])
            wait_until(lambda: _statuses(model_id) == {"done": 1}, 120, "the first window",
                       on_timeout=stack.log_tail)
        # the broker is gone; ingest goes on and is stored
        for k in range(1, 4):
            accepted = ingest("bot", window_documents[k * WINDOW:(k + 1) * WINDOW],
                              start=k * WINDOW)
            assert accepted == WINDOW
        time.sleep(3)
        assert len(sample_ids(model_id)) == 4 * WINDOW
        assert _statuses(model_id).get("done") == 1
        with redis_server(port, tmp_path / "redis2"):  # back, empty
            wait_until(lambda: _statuses(model_id) == {"done": 4}, 240,
                       "the backlog to be planned and scored", on_timeout=stack.log_tail)
    assert_partition(model_id, allow_tail=False)
    _assert_one_score_set_each(_evaluations(model_id))


# ---------------------------------------------------------------- duplicate messages


def test_the_same_task_delivered_twice_scores_once(stack, reference_id, window_documents):
    from service.broker import SCORE_WINDOW, celery_app
    from tests.service.pipeline_fixtures import plan_now

    model_id = _model("bot", reference_id())
    ingest("bot", window_documents[:WINDOW])
    (evaluation_id,) = plan_now()  # planned here, not yet sent
    with stack.worker("w1"), stack.worker("w2"):
        for _ in range(3):
            celery_app.send_task(SCORE_WINDOW, args=[evaluation_id])
        wait_until(lambda: _statuses(model_id) == {"done": 1}, 120, "the evaluation",
                   on_timeout=stack.log_tail)
        time.sleep(3)  # let the duplicates run too
    (done,) = _evaluations(model_id)
    assert done.attempts == 1  # the duplicates found it claimed or done
    assert count_rows(Evaluation) == 1
    _assert_one_score_set_each([done])


# ---------------------------------------------------------------- two workers share the work


def test_two_workers_score_200_windows_each_once(stack, lexical_reference_id, human_documents):
    models, windows_each = 20, 10
    ref = lexical_reference_id()
    docs = human_documents[6000:6000 + windows_each * WINDOW]
    model_ids = [_model(f"m{i:02d}", ref) for i in range(models)]
    for i in range(models):
        ingest(f"m{i:02d}", docs)
    with stack.beat(), stack.worker("w1"), stack.worker("w2"):
        wait_until(lambda: _statuses().get("done", 0) == models * windows_each, 1500,
                   "200 evaluations", interval=1.0,
                   on_timeout=lambda: f"{_statuses()}\n{stack.log_tail()}")
    evaluations = _evaluations()
    assert len(evaluations) == models * windows_each
    assert all(e.attempts == 1 for e in evaluations)  # nobody scored a window twice
    _assert_one_score_set_each(evaluations)
    for model_id in model_ids:
        assert_partition(model_id, allow_tail=False)
    # both workers took part
    for name in ("w1", "w2"):
        assert '"window scored"' in (stack.logs / f"{name}.log").read_text()


# ---------------------------------------------------------------- ingest racing the planner


def test_samples_ingested_while_windows_close_land_in_exactly_one_window(
        stack, lexical_reference_id, human_documents):
    model_id = _model("bot", lexical_reference_id(), size=50)
    docs = human_documents[7000:7600]
    errors: list[Exception] = []

    def ingester(part: int) -> None:
        try:
            mine = docs[part::4]
            for start in range(0, len(mine), 7):
                ingest("bot", mine[start:start + 7], prefix=f"p{part}-", start=start)
                time.sleep(0.01)
        except Exception as exc:  # noqa: BLE001 -- reported by the main thread
            errors.append(exc)

    # two beats and two workers plan concurrently (as on several hosts)
    with stack.beat("beat1"), stack.beat("beat2"), stack.worker("w1"), stack.worker("w2"):
        threads = [threading.Thread(target=ingester, args=(p,)) for p in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        wait_until(lambda: len(_evaluations(model_id)) == len(docs) // 50, 120,
                   "every full window to be planned", on_timeout=stack.log_tail)
    assert len(sample_ids(model_id)) == len(docs)
    assert_partition(model_id, allow_tail=False)
