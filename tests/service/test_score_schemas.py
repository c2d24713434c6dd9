"""The response models document what /evaluations and /health send, without re-shaping it."""

from __future__ import annotations

import json

from fastapi.encoders import jsonable_encoder

from service.domain.score_schemas import EvaluationList, HealthPublic, ScoreJSON
from tests.service.pipeline_fixtures import WINDOW, planned
from tests.service.test_pipeline_api import _ingest, _small_windows, _store


def _wire(body: dict) -> bytes:
    """FastAPI's own encoding of a plain dict: what the routes sent before they had models."""
    return json.dumps(jsonable_encoder(body), ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode()


def test_openapi_shows_the_score_json_shapes(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("EvaluationList", "EvaluationPublic", "HealthPublic", "SignalScore",
                 "MetricScore"):
        assert name in schemas, name
    route = spec["paths"]["/api/v1/models/{name}/evaluations"]["get"]
    ok = route["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/EvaluationList")
    assert "tail_coverage" not in schemas["EvaluationPublic"]["properties"]
    assert {"signals", "metrics", "health", "window_end"} <= set(
        schemas["EvaluationPublic"]["properties"])


def test_stored_windows_validate_and_keep_their_bytes(client, model_name, admin_headers,
                                                      ingest_headers, window_documents,
                                                      window_result):
    from service.domain import history
    from service.domain.db import session_factory

    _small_windows(client, admin_headers)
    _ingest(client, ingest_headers, window_documents[:2 * WINDOW])
    ids = planned()
    assert len(ids) == 2
    _store(ids[0], window_result)

    # with a key: the evidence's quoted texts are shown to key holders only
    r = client.get("/api/v1/models/bot/evaluations?status=all", headers=admin_headers)
    assert r.status_code == 200, r.text
    parsed = EvaluationList.model_validate(r.json())
    assert [e.status for e in parsed.evaluations] == ["pending", "done"]
    scored = parsed.evaluations[1]
    assert scored.health == window_result["health"]
    assert set(scored.signals) == {"diversity", "tail_coverage", "sameness"}
    # every key the scorer wrote arrives, in the scorer's order, even ones the model names not
    assert list(r.json()["evaluations"][1])[:len(window_result)] == list(window_result)

    with session_factory()() as session:
        expected = history.list_evaluations(session, "bot", status="all")
    assert r.content == _wire(expected)

    h = client.get("/api/v1/models/bot/health", headers=admin_headers)
    assert h.status_code == 200
    health = HealthPublic.model_validate(h.json())
    assert health.model == "bot" and health.id == ids[0]
    with session_factory()() as session:
        assert h.content == _wire(history.model_health(session, "bot"))


def test_the_score_json_model_rejects_a_wrong_shape(window_result):
    ScoreJSON.model_validate(window_result)
    broken = dict(window_result, health="fine")
    try:
        ScoreJSON.model_validate(broken)
    except ValueError as exc:
        assert "health" in str(exc)
    else:
        raise AssertionError("an unknown health state must not validate")
