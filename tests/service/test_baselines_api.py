"""POST/GET /models/{name}/baseline: documents, profile files, time ranges, re-pinning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from service.domain.tables import Baseline, BaselinePin, MonitoredModel
from tests.service.api_fixtures import REFERENCE_SIZE, assert_problem, store_reference
from tests.service.pipeline_fixtures import count_rows

URL = "/api/v1/models/bot/baseline"


@pytest.fixture(scope="session")
def second_baseline_profile(human_documents, reference_profile):
    """Another baseline against the same reference (for re-pinning)."""
    import metrics

    start = REFERENCE_SIZE + 400
    return metrics.build_baseline(human_documents[start:start + 210], reference_profile,
                                  "bot-baseline-2")


def _admin_key_id(admin_headers) -> int:
    from service.domain.db import session_scope
    from service.domain.keys import verify_key

    with session_scope() as session:
        return verify_key(session, admin_headers["Authorization"].split()[1]).key_id


def _current() -> tuple[int | None, int, int]:
    """(model's baseline_id, baselines stored, pins recorded)."""
    from service.domain.db import session_scope

    with session_scope() as session:
        current = session.scalar(select(MonitoredModel.baseline_id))
    return current, count_rows(Baseline), count_rows(BaselinePin)


def _upload_profile(client, headers, profile, **fields):
    return client.post(URL, headers=headers, data={k: str(v) for k, v in fields.items()},
                       files={"profile": ("baseline.cwp", profile.to_bytes(),
                                          "application/octet-stream")})


def test_baseline_from_documents(client, model_name, admin_headers, human_documents,
                                 reference_profile):
    import metrics

    docs = human_documents[REFERENCE_SIZE + 1000:REFERENCE_SIZE + 1210]
    r = client.post(URL, headers=admin_headers,
                    json={"documents": docs, "name": "bot-v1", "reason": "launch week"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "set"
    baseline = body["baseline"]
    assert baseline["name"] == "bot-v1" and baseline["source"] == "upload"
    assert baseline["sha256"] == metrics.documents_sha256(metrics.normalize_documents(docs))
    assert baseline["document_count"] == len(docs)
    assert set(baseline["human_ratios"]) == set(metrics.SIGNALS)
    assert baseline["reference"]["sha256"] == reference_profile.sha256
    assert baseline["created_by"] == f"key:{_admin_key_id(admin_headers)}"
    (pin,) = body["history"]
    assert pin["old_sha256"] is None and pin["new_sha256"] == baseline["sha256"]
    assert pin["actor"] == baseline["created_by"] and pin["reason"] == "launch week"
    assert client.get(URL).json() == body
    model = client.get("/api/v1/models/bot").json()
    assert model["baseline"]["sha256"] == baseline["sha256"]
    assert model["baseline_status"] == "set"


def test_too_few_documents_is_422_and_changes_nothing(client, model_name, admin_headers,
                                                      human_documents):
    r = client.post(URL, headers=admin_headers, json=human_documents[:20])
    assert_problem(r, 422, "at least 200", "got 20")
    assert _current() == (None, 0, 0)
    assert client.get(URL).json()["status"] == "collecting"


def test_profile_built_against_another_reference_is_422(client, admin_headers,
                                                        human_documents, baseline_profile):
    import metrics

    other = metrics.build_reference(human_documents[9000:9240], "other-humans")
    ref = store_reference(other, human_documents[9000:9240], name="other-humans")
    r = client.post("/api/v1/models", headers=admin_headers,
                    json={"name": "bot", "reference_id": ref})
    assert r.status_code == 201, r.text
    # baseline_profile was built against the "fortunes" reference
    body = assert_problem(_upload_profile(client, admin_headers, baseline_profile), 422,
                          "built against", other.sha256)
    assert body["expected_reference_sha256"] == other.sha256
    assert _current() == (None, 0, 0)


def test_a_reference_profile_or_garbage_is_not_a_baseline(client, model_name, admin_headers,
                                                          reference_profile):
    assert_problem(_upload_profile(client, admin_headers, reference_profile), 422,
                   "not a baseline")
    r = client.post(URL, headers=admin_headers,
                    files={"profile": ("x.cwp", b"not a profile", "application/octet-stream")})
    assert_problem(r, 422, "profile")
    assert _current() == (None, 0, 0)


def test_repinning_is_explicit_and_recorded(client, model_name, admin_headers,
                                            baseline_profile, second_baseline_profile):
    r = _upload_profile(client, admin_headers, baseline_profile)
    assert r.status_code == 201, r.text
    first = r.json()["baseline"]
    assert first["sha256"] == baseline_profile.sha256 and first["source"] == "upload"

    # a second baseline without "replace" is refused and changes nothing
    before = _current()
    assert_problem(_upload_profile(client, admin_headers, second_baseline_profile), 409,
                   "replace")
    assert _current() == before

    r = _upload_profile(client, admin_headers, second_baseline_profile, replace="true",
                        reason="new decoding settings")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["baseline"]["sha256"] == second_baseline_profile.sha256
    newest, oldest = body["history"]
    assert (newest["old_sha256"], newest["new_sha256"]) == (baseline_profile.sha256,
                                                            second_baseline_profile.sha256)
    assert newest["actor"] == f"key:{_admin_key_id(admin_headers)}"
    assert newest["reason"] == "new decoding settings"
    assert oldest["old_sha256"] is None and oldest["new_sha256"] == baseline_profile.sha256
    assert _current()[1:] == (2, 2)


def test_old_evaluations_keep_their_baseline(client, model_name, admin_headers,
                                             ingest_headers, baseline_profile,
                                             second_baseline_profile, window_documents,
                                             window_result):
    from service.domain import evaluation as scoring
    from service.domain.db import session_factory, session_scope
    from service.domain.tables import Evaluation
    from service.settings import get_settings
    from tests.service.pipeline_fixtures import WINDOW, planned

    client.patch("/api/v1/models/bot", headers=admin_headers, json={"window": {"size": WINDOW}})
    first_id = _upload_profile(client, admin_headers, baseline_profile).json()["baseline"]["id"]
    client.post("/api/v1/models/bot/samples", headers=ingest_headers, json={"samples": [
        {"id": str(i), "text": d} for i, d in enumerate(window_documents[:2 * WINDOW])]})
    old, new = planned()
    maker = session_factory()
    with maker() as session, session.begin():
        attempt = scoring.claim(session, old, get_settings())
    with maker() as session, session.begin():
        chosen = scoring.choose_baseline(session, session.get(Evaluation, old))
        assert chosen == first_id
        scoring.store(session, old, attempt, chosen, window_result, 0.1)

    r = _upload_profile(client, admin_headers, second_baseline_profile, replace="1")
    second_id = r.json()["baseline"]["id"]
    with session_scope() as session:
        assert session.get(Evaluation, old).baseline_id == first_id
        assert scoring.choose_baseline(session, session.get(Evaluation, new)) == second_id


def test_baseline_from_a_time_range_of_stored_samples(client, model_name, admin_headers,
                                                      ingest_headers, human_documents):
    t = datetime(2026, 2, 1, tzinfo=UTC)
    docs = human_documents[REFERENCE_SIZE + 2000:REFERENCE_SIZE + 2300]
    samples = [{"id": f"s{i}", "text": d, "timestamp": (t + timedelta(minutes=i)).isoformat()}
               for i, d in enumerate(docs)]
    for start in range(0, len(samples), 100):
        r = client.post("/api/v1/models/bot/samples", headers=ingest_headers,
                        json={"samples": samples[start:start + 100]})
        assert r.status_code == 202, r.text

    # minutes 0..209 inclusive: the first 210 samples
    body = {"from": t.isoformat(), "to": (t + timedelta(minutes=209)).isoformat()}
    r = client.post(URL, headers=admin_headers, json=body)
    assert r.status_code == 201, r.text
    baseline = r.json()["baseline"]
    assert baseline["source"] == "range" and baseline["document_count"] == 210
    assert baseline["range_from"].startswith("2026-02-01T00:00")
    assert baseline["range_to"].startswith("2026-02-01T03:29")

    before = _current()
    empty = {"from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z", "replace": True}
    assert_problem(client.post(URL, headers=admin_headers, json=empty), 422, "no samples")
    small = {"from": t.isoformat(), "to": (t + timedelta(minutes=9)).isoformat(),
             "replace": True}
    assert_problem(client.post(URL, headers=admin_headers, json=small), 422, "got 10")
    backwards = {"from": (t + timedelta(days=1)).isoformat(), "to": t.isoformat(),
                 "replace": True}
    assert_problem(client.post(URL, headers=admin_headers, json=backwards), 422, "after")
    assert _current() == before


def test_file_upload_of_documents(client, model_name, admin_headers, human_documents):
    import json

    docs = human_documents[REFERENCE_SIZE + 3000:REFERENCE_SIZE + 3205]
    data = "\n".join(json.dumps({"output": d}) for d in docs).encode()
    r = client.post(URL, headers=admin_headers, data={"field": "output", "name": "from-file"},
                    files={"file": ("outputs.jsonl", data, "application/jsonl")})
    assert r.status_code == 201, r.text
    assert r.json()["baseline"]["document_count"] == 205
    assert r.json()["baseline"]["name"] == "from-file"


def test_bad_requests(client, model_name, admin_headers, make_key):
    docs = ["one output"] * 3
    cases = [
        (client.post(URL, json={"documents": docs}), 401),
        (client.post(URL, json={"documents": docs},
                     headers={"Authorization": f"Bearer {make_key('ingest', 'bot')}"}), 403),
        (client.post(URL, headers=admin_headers,
                     json={"documents": docs, "from": "2026-01-01T00:00:00Z"}), 422),
        (client.post(URL, headers=admin_headers, json={"from": "2026-01-01T00:00:00Z"}), 422),
        (client.post(URL, headers=admin_headers, json={"docs": docs}), 422),
        (client.post(URL, headers=admin_headers, content=b"{not json",
                     ), 415),
        (client.post(URL, headers={**admin_headers, "content-type": "application/json"},
                     content=b"{not json"), 422),
        (client.post(URL, headers=admin_headers, files={
            "file": ("a.txt", b"x\n", "text/plain"),
            "profile": ("b.cwp", b"y", "application/octet-stream")}), 422),
        (client.post("/api/v1/models/nope/baseline", headers=admin_headers,
                     json={"documents": docs}), 404),
    ]
    for response, status in cases:
        assert_problem(response, status)
    assert_problem(client.get("/api/v1/models/nope/baseline"), 404)
    assert _current() == (None, 0, 0)
