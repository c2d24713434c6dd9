"""Rare-topic probe answers through the pipeline (SQLite and PostgreSQL): a scored window's
evidence says, per probe topic, how many answers still land where the baseline's answers to
the same probes landed."""

from __future__ import annotations

import numpy as np
import pytest

from tests.service.api_fixtures import store_reference
from tests.service.pipeline_fixtures import WINDOW, add_model, evaluation, plan_now, score_now


def _ingest(model: str, items: list[tuple[str, dict | None]], prefix: str) -> None:
    from service.domain.db import session_factory
    from service.domain.ingest import ingest_samples
    from service.domain.schemas import SampleIn
    from service.settings import get_settings

    batch = [SampleIn(id=f"{prefix}{i}", text=text, attributes=attrs)
             for i, (text, attrs) in enumerate(items)]
    with session_factory()() as session:
        assert ingest_samples(session, get_settings(), model, batch).accepted == len(batch)


@pytest.fixture(scope="module")
def two_topics(reference_profile, window_documents) -> tuple[list[str], list[str], list[str]]:
    """Fresh documents of the two most common reference topics, and others."""
    from metrics import semantic as S

    docs = list(dict.fromkeys(d for d in window_documents if d.strip()))
    vectors = S.embed_probe_answers([("x", d) for d in docs], reference_profile)["x"]
    labels = np.argmax(vectors @ reference_profile.semantic.centroids.T, axis=1)
    a, b = np.argsort(-np.bincount(labels), kind="stable")[:2]
    of_a = [d for d, label in zip(docs, labels) if label == a]
    of_b = [d for d, label in zip(docs, labels) if label == b]
    rest = [d for d, label in zip(docs, labels) if label not in (a, b)]
    assert len(of_a) >= 12 and len(of_b) >= 8 and len(rest) >= 2 * WINDOW
    return of_a, of_b, rest


def _probe(topic: str) -> dict:
    return {"rare_topic": True, "topic": topic, "probe_id": "p"}


def test_window_evidence_reports_probe_answers_against_the_baselines(
        pipeline_env, reference_profile, reference_documents, baseline_profile, two_topics):
    from service.domain.db import session_scope
    from service.domain.tables import Baseline, MonitoredModel, Sample

    of_a, of_b, rest = two_topics
    ref = store_reference(reference_profile, reference_documents)
    model_id = add_model("bot", ref, size=WINDOW)
    # the baseline's time: 10 linguistics answers, all in topic a; answers that are not
    # rare-topic probes (rare_topic false, or no rare_topic) are not probe answers
    first = [(d, _probe("linguistics")) for d in of_a[:10]]
    first += [(rest[0], {"rare_topic": False, "topic": "linguistics"}),
              (rest[1], {"topic": "linguistics"})]
    first += [(d, None) for d in rest[2:WINDOW - len(first) + 2]]
    _ingest("bot", first, "a")
    with session_scope() as s:
        last = s.query(Sample.id).filter_by(model_id=model_id).order_by(Sample.id.desc()).first()
        row = Baseline(model_id=model_id, reference_id=ref, name="before", sha256="b" * 64,
                       source="range", document_count=baseline_profile.document_count,
                       token_count=baseline_profile.token_count,
                       profile=baseline_profile.to_bytes(), last_sample_id=last[0])
        s.add(row)
        s.flush()
        s.get(MonitoredModel, model_id).baseline_id = row.id
    # now: 2 of 10 linguistics answers still in topic a, and a probe topic never asked before
    second = [(d, _probe("linguistics")) for d in of_a[10:12] + of_b[:8]]
    second += [(of_b[8 % len(of_b)], _probe("sailing"))]
    second += [(d, None) for d in rest[WINDOW:2 * WINDOW - len(second)]]
    _ingest("bot", second, "b")
    early, late = plan_now()
    assert score_now(early).status == "done" and score_now(late).status == "done"

    # the baseline's own window: compared with nothing, it still says where answers land
    (ling,) = evaluation(early).result["evidence"]["probe_topics"]
    assert (ling["probe_topic"], ling["answers"], ling["on_topic"]) == ("linguistics", 10, None)

    result = evaluation(late).result
    assert result["baseline"]["name"] == "bot-baseline"
    by = {e["probe_topic"]: e for e in result["evidence"]["probe_topics"]}
    assert set(by) == {"linguistics", "sailing"}
    assert by["linguistics"]["summary"] == (
        "linguistics probes: 2/10 answers still on topic (baseline 10/10)")
    assert by["sailing"]["on_topic"] is None


def test_a_window_without_probe_answers_has_no_probe_evidence(
        pipeline_env, reference_profile, reference_documents, two_topics):
    ref = store_reference(reference_profile, reference_documents)
    add_model("bot", ref, size=WINDOW)
    _ingest("bot", [(d, {"topic": "x"}) for d in two_topics[2][:WINDOW]], "c")
    (evaluation_id,) = plan_now()
    assert score_now(evaluation_id).status == "done"
    evidence = evaluation(evaluation_id).result["evidence"]
    assert "probe_topics" not in evidence and "vanished_topics" in evidence
