"""GET /models/{name}/evaluations and /health: the Score JSON of scored windows over REST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from service.domain.tables import Evaluation
from tests.service.api_fixtures import assert_problem
from tests.service.pipeline_fixtures import WINDOW, planned


def _store(evaluation_id: int, result: dict) -> None:
    """Store a real Score JSON through the scoring path's own claim + store."""
    from service.domain import evaluation as scoring
    from service.domain.db import session_factory
    from service.settings import get_settings

    maker = session_factory()
    with maker() as session, session.begin():
        attempt = scoring.claim(session, evaluation_id, get_settings())
    with maker() as session, session.begin():
        assert scoring.store(session, evaluation_id, attempt, None, result, 0.5)


def _ingest(client, headers, docs: list[str], prefix: str = "s") -> None:
    r = client.post("/api/v1/models/bot/samples", headers=headers,
                    json={"samples": [{"id": f"{prefix}{i}", "text": d}
                                      for i, d in enumerate(docs)]})
    assert r.status_code == 202, r.text


def _small_windows(client, admin_headers) -> None:
    r = client.patch("/api/v1/models/bot", headers=admin_headers,
                     json={"window": {"size": WINDOW, "min_size": 10}})
    assert r.status_code == 200, r.text


def test_health_before_the_first_evaluation(client, model_name, reference_profile):
    r = client.get("/api/v1/models/bot/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["health"] == "insufficient_data"
    assert body["reference"] == {"name": "fortunes", "sha256": reference_profile.sha256}
    assert body["baseline"] is None and body["signals"] == {} and body["metrics"] == {}
    # the first windows will become the baseline, and the answer says so
    assert body["baseline_status"] == "collecting"
    assert body["baseline_collection"]["windows_closed"] == 0
    assert client.get("/api/v1/models/bot/evaluations").json() == {"evaluations": [],
                                                                   "next_cursor": None}


def test_evaluations_newest_first_with_window_times(client, model_name, admin_headers,
                                                    ingest_headers, window_documents,
                                                    window_result):
    _small_windows(client, admin_headers)
    _ingest(client, ingest_headers, window_documents[:3 * WINDOW])
    ids = planned()
    assert len(ids) == 3
    for evaluation_id in ids[:2]:
        _store(evaluation_id, window_result)

    r = client.get("/api/v1/models/bot/evaluations")
    assert r.status_code == 200, r.text
    evaluations = r.json()["evaluations"]
    assert [e["id"] for e in evaluations] == [ids[1], ids[0]]  # scored only, newest first
    for e in evaluations:
        for key in ("reference", "baseline", "documents", "tokens", "health", "signals",
                    "metrics"):
            assert e[key] == window_result[key]
        assert e["window_start"] <= e["window_end"] and e["created_at"]
        assert e["status"] == "done" and e["sample_count"] == WINDOW

    pending = client.get("/api/v1/models/bot/evaluations", params={"status": "pending"})
    assert [e["id"] for e in pending.json()["evaluations"]] == [ids[2]]
    assert pending.json()["evaluations"][0]["health"] is None
    everything = client.get("/api/v1/models/bot/evaluations", params={"status": "all"})
    assert len(everything.json()["evaluations"]) == 3
    limited = client.get("/api/v1/models/bot/evaluations", params={"limit": 1})
    assert [e["id"] for e in limited.json()["evaluations"]] == [ids[1]]

    health = client.get("/api/v1/models/bot/health").json()
    assert health["id"] == ids[1] and health["health"] == window_result["health"]
    assert health["signals"] == window_result["signals"]
    assert health["evaluations_pending"] == 1


def test_since_and_until_filter_on_window_end(client, model_name, admin_headers,
                                              ingest_headers, window_documents, window_result):
    from service.domain.db import session_scope

    _small_windows(client, admin_headers)
    _ingest(client, ingest_headers, window_documents[:2 * WINDOW])
    first, second = planned()
    for evaluation_id in (first, second):
        _store(evaluation_id, window_result)
    t = datetime(2026, 3, 1, tzinfo=UTC)
    with session_scope() as session:
        for evaluation_id, end in ((first, t), (second, t + timedelta(hours=2))):
            session.execute(update(Evaluation).where(Evaluation.id == evaluation_id)
                            .values(window_start=end - timedelta(minutes=5), window_end=end))

    def ids(**params):
        r = client.get("/api/v1/models/bot/evaluations", params=params)
        assert r.status_code == 200, r.text
        return [e["id"] for e in r.json()["evaluations"]]

    hour = (t + timedelta(hours=1)).isoformat()
    assert ids(since=hour) == [second]
    assert ids(until=hour) == [first]
    assert ids(since=t.isoformat(), until=(t + timedelta(hours=2)).isoformat()) == [second, first]


def test_bad_queries_are_problems(client, model_name):
    assert_problem(client.get("/api/v1/models/nope/evaluations"), 404, "nope")
    assert_problem(client.get("/api/v1/models/nope/health"), 404, "nope")
    assert_problem(client.get("/api/v1/models/bot/evaluations", params={"limit": 0}), 422,
                   "limit")
    assert_problem(client.get("/api/v1/models/bot/evaluations",
                              params={"since": "2026-02-01T00:00:00Z",
                                      "until": "2026-01-01T00:00:00Z"}), 422, "after")
    assert_problem(client.get("/api/v1/models/bot/evaluations", params={"status": "odd"}),
                   422, "status")


def test_reads_need_a_key_when_configured(client, model_name, monkeypatch, make_key):
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_REQUIRE_READ_KEY", "1")
    get_settings.cache_clear()
    assert_problem(client.get("/api/v1/models/bot/health"), 401)
    headers = {"Authorization": f"Bearer {make_key('read')}"}
    assert client.get("/api/v1/models/bot/health", headers=headers).status_code == 200
    assert client.get("/api/v1/models/bot/evaluations", headers=headers).status_code == 200


def _evaluations() -> list[Evaluation]:
    from service.domain.db import session_scope

    with session_scope() as session:
        rows = list(session.scalars(select(Evaluation).order_by(Evaluation.id)))
        session.expunge_all()
        return rows


def test_an_ingest_that_fills_a_window_plans_and_enqueues_it(client, model_name, admin_headers,
                                                             ingest_headers, window_documents):
    """No wait for beat: the request that completes a window has it planned and sent."""
    _small_windows(client, admin_headers)
    _ingest(client, ingest_headers, window_documents[:WINDOW - 1])
    assert _evaluations() == []
    _ingest(client, ingest_headers, window_documents[WINDOW - 1:WINDOW + 5], prefix="t")
    (row,) = _evaluations()
    assert (row.status, row.sample_count, row.window_index) == ("pending", WINDOW, 0)
    assert row.enqueued_at is not None  # sent to the broker after the commit
    # the samples past the window wait for the next one
    _ingest(client, ingest_headers, window_documents[WINDOW + 5:WINDOW + 8], prefix="u")
    assert len(_evaluations()) == 1


def test_plan_on_ingest_can_be_turned_off(client, model_name, admin_headers, ingest_headers,
                                          window_documents, monkeypatch):
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_PLAN_ON_INGEST", "0")
    get_settings.cache_clear()
    _small_windows(client, admin_headers)
    _ingest(client, ingest_headers, window_documents[:2 * WINDOW])
    assert _evaluations() == []
    assert len(planned()) == 2  # beat's planner still closes them
