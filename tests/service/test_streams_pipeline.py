"""A stream's windows get a synthetic_share: scored by the real scoring task on SQLite and
PostgreSQL (in this process), and by a real Celery worker on PostgreSQL + Redis.

The stream's source is a baseline of a trigram generator (``metrics.synthetic``) trained on
human documents; the windows mix fresh human documents (in neither the reference nor the
generator's training text) with fresh outputs of the same generator (other seeds than its
baseline's).
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from service.domain.tables import Baseline, MonitoredModel
from tests.service.api_fixtures import store_reference
from tests.service.pipeline_fixtures import (
    add_model,
    evaluation,
    ingest,
    plan_now,
    score_now,
    wait_until,
)
from tests.service.test_pipeline_processes import make_stack  # noqa: F401 - a fixture

WINDOW = 200


@pytest.fixture(scope="module")
def stream_corpus(human_documents):
    """(reference profile and documents, generator baseline, fresh human, fresh synthetic)."""
    import metrics
    from metrics.synthetic import NGramModel

    reference_docs = human_documents[:1500]
    reference = metrics.build_reference(reference_docs, "fortunes",
                                        config=metrics.ReferenceConfig(replicates=10))
    generator = NGramModel.train(human_documents[3000:5000])
    baseline = metrics.build_baseline(generator.sample(600, seed=1), reference, "trigram-v1")
    fresh_human = human_documents[6000:6000 + 2 * WINDOW]
    fresh_synthetic = generator.sample(2 * WINDOW, seed=2)
    return reference, reference_docs, baseline, fresh_human, fresh_synthetic


def _store_baseline(model_id: int, reference_id: int, profile, name: str) -> int:
    """A baseline row holding ``profile`` (what an upload through the API stores)."""
    from service.domain.db import session_scope

    with session_scope() as session:
        row = Baseline(model_id=model_id, reference_id=reference_id, name=name,
                       sha256=profile.sha256, source="upload",
                       document_count=profile.document_count, token_count=profile.token_count,
                       profile=profile.to_bytes(), human_ratios=profile.human_ratios or {})
        session.add(row)
        session.flush()
        return row.id


def _make_stream(name: str, reference_id: int, sources: list[int],
                 max_share: float | None = None) -> int:
    from service.domain.db import session_scope

    model_id = add_model(name, reference_id, size=WINDOW, min_size=WINDOW)
    with session_scope() as session:
        session.execute(update(MonitoredModel).where(MonitoredModel.id == model_id)
                        .values(kind="stream", sources=sources, max_synthetic_share=max_share))
    return model_id


@pytest.fixture
def stream(pipeline_env, stream_corpus):
    """A stream "crawl" whose source is the generator's baseline, and a plain model "bot"."""
    from service.domain.profiles import MIXTURES

    MIXTURES.clear()
    reference, reference_docs, baseline, _, _ = stream_corpus
    ref = store_reference(reference, reference_docs)
    generator_id = add_model("generator", ref)
    source = _store_baseline(generator_id, ref, baseline, "trigram-v1")
    _make_stream("crawl", ref, [source])
    add_model("bot", ref, size=WINDOW, min_size=WINDOW)
    return {"reference_id": ref, "source": source}


def _half_synthetic(stream_corpus, part: int = 0) -> list[str]:
    _, _, _, human, synthetic = stream_corpus
    half = WINDOW // 2
    docs = human[part * half:(part + 1) * half] + synthetic[part * half:(part + 1) * half]
    # interleaved, as a real stream's documents arrive
    return [d for pair in zip(docs[:half], docs[half:], strict=True) for d in pair]


def test_a_stream_window_stores_its_synthetic_share_and_its_collapse_scores(
        stream, stream_corpus):
    from service.domain.score_schemas import ScoreJSON

    ingest("crawl", _half_synthetic(stream_corpus))
    (evaluation_id,) = plan_now()
    assert score_now(evaluation_id).status == "done"
    result = evaluation(evaluation_id).result
    share = result["synthetic_share"]
    assert set(share) == {"estimate", "low", "high", "by_source", "unexplained", "scores",
                          "documents", "parts"}
    # the default: every profile has embeddings, so both estimators, joined: the LM ratio
    # over every document and with the embedding score over the documents the semantic
    # metrics embedded (here all of them: fewer than 512)
    assert share["scores"] == "joined" and share["documents"] == WINDOW
    parts = share["parts"]
    assert set(parts) == {"lexical", "lexical+semantic"}
    assert [p["documents"] for p in parts.values()] == [WINDOW, WINDOW]
    assert share["estimate"] == pytest.approx(
        (parts["lexical"]["estimate"] + parts["lexical+semantic"]["estimate"]) / 2, abs=1e-4)
    assert share["low"] == min(p["low"] for p in parts.values())
    assert share["high"] == max(p["high"] for p in parts.values())
    assert set(share["by_source"]) == {"trigram-v1"}
    source = share["by_source"]["trigram-v1"]
    assert set(source) == {"estimate", "low", "high"}
    assert share["low"] <= share["estimate"] <= share["high"]
    assert source["estimate"] == pytest.approx(share["estimate"], abs=1e-3)  # one source
    # half of the window was written by the source
    assert abs(share["estimate"] - 0.5) < 0.15, share
    assert share["high"] - share["low"] < 0.4
    # still scored for collapse as usual
    assert result["health"] and result["signals"] and result["metrics"]
    assert ScoreJSON.model_validate(result).synthetic_share.by_source["trigram-v1"].low == \
        source["low"]


def test_a_human_stream_window_has_a_low_share(stream, stream_corpus):
    _, _, _, human, _ = stream_corpus
    ingest("crawl", human[WINDOW:2 * WINDOW])
    (evaluation_id,) = plan_now()
    score_now(evaluation_id)
    share = evaluation(evaluation_id).result["synthetic_share"]
    assert share["estimate"] < 0.15 and share["low"] < 0.05, share


def test_a_model_window_has_no_synthetic_share(stream, stream_corpus):
    ingest("bot", _half_synthetic(stream_corpus))
    (evaluation_id,) = plan_now()
    score_now(evaluation_id)
    result = evaluation(evaluation_id).result
    assert "synthetic_share" not in result and "synthetic_share_unavailable" not in result
    assert result["health"]


def test_the_mixture_is_built_once_for_the_streams_windows(stream, stream_corpus):
    from service.domain.profiles import MIXTURES

    before = MIXTURES.builds  # the fixture emptied the cache
    ingest("crawl", _half_synthetic(stream_corpus, 0), prefix="a")
    ingest("crawl", _half_synthetic(stream_corpus, 1), prefix="b")
    first, second = plan_now()
    score_now(first)
    score_now(second)
    assert MIXTURES.builds == before + 1
    assert "synthetic_share" in evaluation(second).result


@pytest.fixture
def share_setting(pipeline_env, monkeypatch):
    """Sets one environment variable for the test's workers and settings."""
    from service.settings import get_settings

    def set_(name: str, value: str) -> None:
        monkeypatch.setenv(f"COLLAPSEWATCH_{name}", value)
        get_settings.cache_clear()

    yield set_
    get_settings.cache_clear()


@pytest.mark.parametrize("name,value,scores,documents", [
    ("STREAM_SHARE_SCORES", "semantic", "lexical+semantic", WINDOW),
    ("STREAM_SEMANTIC_SHARE", "on", "lexical+semantic", WINDOW),  # the earlier spelling
    ("STREAM_SHARE_SCORES", "lexical", "lexical", WINDOW),
])
def test_a_stream_can_be_estimated_by_one_estimator(
        share_setting, name, value, scores, documents, stream, stream_corpus):
    """STREAM_SHARE_SCORES picks one estimator: with the embedding score over the documents
    the semantic metrics embedded (here all: fewer than 512), or the LM ratio alone."""
    share_setting(name, value)
    ingest("crawl", _half_synthetic(stream_corpus))
    (evaluation_id,) = plan_now()
    assert score_now(evaluation_id).status == "done"
    share = evaluation(evaluation_id).result["synthetic_share"]
    assert share["scores"] == scores and share["documents"] == documents
    assert "parts" not in share
    assert abs(share["estimate"] - 0.5) < 0.15, share


def test_an_unknown_share_setting_is_a_one_line_error(tmp_path):
    """A COLLAPSEWATCH_* value the settings cannot read stops the command with the
    variable's name, not a traceback, and nothing is written."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, COLLAPSEWATCH_STREAM_SHARE_SCORES="both",
               COLLAPSEWATCH_DATA_DIR=str(tmp_path / "data"))
    env.pop("COLLAPSEWATCH_DATABASE_URL", None)
    cli = str(Path(sys.executable).with_name("collapsewatch"))
    out = subprocess.run([cli, "migrate"], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        ("collapsewatch: error: COLLAPSEWATCH_STREAM_SHARE_SCORES: "
         "Input should be 'joined', 'lexical' or 'semantic'")]
    assert not (tmp_path / "data").exists()


def test_a_source_without_embeddings_leaves_the_stream_on_the_lm_score(stream, stream_corpus):
    """By default, a source baseline built without an embedding model: the stream's windows
    are estimated by the LM ratio alone, over every document, and the JSON says so."""
    import metrics

    reference, _, _, _, synthetic = stream_corpus
    # (built from the windows' own synthetic documents: the share's value is not the point)
    plain = metrics.build_baseline(synthetic, reference, "plain", embedder=None)
    source = _store_baseline(add_model("plain-generator", stream["reference_id"]),
                             stream["reference_id"], plain, "plain")
    _make_stream("feed", stream["reference_id"], [source])
    ingest("feed", _half_synthetic(stream_corpus))
    (evaluation_id,) = plan_now()
    assert score_now(evaluation_id).status == "done"
    share = evaluation(evaluation_id).result["synthetic_share"]
    assert share["scores"] == "lexical" and share["documents"] == WINDOW
    assert share["by_source"]["plain"]


def test_a_deleted_source_leaves_the_window_scored_and_says_why(stream, stream_corpus):
    from service.domain.db import session_scope

    with session_scope() as session:
        session.execute(update(MonitoredModel).where(MonitoredModel.name == "crawl")
                        .values(sources=[stream["source"], 987654]))
    ingest("crawl", _half_synthetic(stream_corpus))
    (evaluation_id,) = plan_now()
    assert score_now(evaluation_id).status == "done"
    result = evaluation(evaluation_id).result
    assert "synthetic_share" not in result
    assert "987654" in result["synthetic_share_unavailable"]
    assert result["health"] and result["metrics"]


def test_the_api_serves_the_share_of_a_stream_window(stream, stream_corpus, client,
                                                     admin_headers):
    ingest("crawl", _half_synthetic(stream_corpus))
    (evaluation_id,) = plan_now()
    score_now(evaluation_id)
    listed = client.get("/api/v1/models/crawl/evaluations", headers=admin_headers).json()
    (row,) = listed["evaluations"]
    assert row["synthetic_share"] == evaluation(evaluation_id).result["synthetic_share"]
    health = client.get("/api/v1/models/crawl/health", headers=admin_headers).json()
    assert health["synthetic_share"]["by_source"]["trigram-v1"]


@pytest.mark.slow
def test_a_celery_worker_scores_a_stream_window(make_stack, postgres_url, redis_url,  # noqa: F811
                                                stream_corpus, tmp_path):
    """The production path: samples in, beat plans, a `collapsewatch worker` process scores."""
    from tests.support import process

    stack = make_stack(postgres_url, redis_url)
    reference, reference_docs, baseline, _, _ = stream_corpus
    ref = store_reference(reference, reference_docs)
    source = _store_baseline(add_model("generator", ref), ref, baseline, "trigram-v1")
    _make_stream("crawl", ref, [source], max_share=0.1)
    with process(["collapsewatch", "worker", "--concurrency=1", "--hostname=w1@%h"],
                 stack.logs / "w1.log", env=stack.env), \
            process(["collapsewatch", "beat", f"--schedule={stack.logs / 'beat'}.schedule"],
                    stack.logs / "beat.log", env=stack.env):
        ingest("crawl", _half_synthetic(stream_corpus))
        evaluation_id = wait_until(plan_or_first, 60, "a planned window")
        wait_until(lambda: evaluation(evaluation_id).status == "done", 180,
                   "the stream window scored by the worker", on_timeout=stack.log_tail)
    share = evaluation(evaluation_id).result["synthetic_share"]
    assert abs(share["estimate"] - 0.5) < 0.15 and share["low"] > 0.1, share


def plan_or_first() -> int | None:
    from sqlalchemy import select

    from service.domain.db import session_scope
    from service.domain.tables import Evaluation

    with session_scope() as session:
        return session.scalar(select(Evaluation.id).order_by(Evaluation.id).limit(1))
