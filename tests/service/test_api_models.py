"""/api/v1/models: create, list, get, patch; window policy, reference switch, baseline view."""

from __future__ import annotations

import pytest

from tests.service.api_fixtures import assert_problem, store_reference, stored_state

MODELS = "/api/v1/models"


def _create(client, headers, **body):
    return client.post(MODELS, json=body, headers=headers)


def test_create_model_uses_the_default_window_policy(client, admin_headers, stored_reference,
                                                     reference_profile):
    from service.settings import get_settings

    s = get_settings()
    r = _create(client, admin_headers, name="support-bot", reference_id=stored_reference)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "support-bot"
    assert body["window"] == {"size": s.default_window_size,
                              "max_age_seconds": s.default_window_max_age_seconds,
                              "min_size": s.default_window_min_size}
    assert body["reference"] == {"id": stored_reference, "name": "fortunes", "version": 1,
                                 "sha256": reference_profile.sha256}
    assert body["auto_baseline_windows"] == s.auto_baseline_windows
    assert body["baseline"] is None and body["baseline_status"] == "collecting"
    assert body["samples_ingested"] == 0 and body["last_sample_at"] is None
    assert client.get(f"{MODELS}/support-bot").json() == body


def test_create_model_with_a_window_policy(client, admin_headers, stored_reference):
    r = _create(client, admin_headers, name="m", reference_id=stored_reference,
                window={"size": 200, "max_age_seconds": None, "min_size": 20},
                auto_baseline_windows=0, description="nightly build")
    body = r.json()
    assert body["window"] == {"size": 200, "max_age_seconds": None, "min_size": 20}
    assert body["baseline_status"] == "none"
    assert body["description"] == "nightly build"


def test_list_models(client, admin_headers, stored_reference):
    for name in ("zeta", "alpha"):
        _create(client, admin_headers, name=name, reference_id=stored_reference)
    assert [m["name"] for m in client.get(MODELS).json()["models"]] == ["alpha", "zeta"]


def test_model_shows_its_baseline(client, admin_headers, stored_reference):
    from service.domain.db import session_scope
    from service.domain.tables import Baseline, MonitoredModel

    _create(client, admin_headers, name="bot", reference_id=stored_reference)
    ratios = {"diversity": 0.81, "tail_coverage": 0.93, "sameness": 1.4}
    with session_scope() as s:
        model = s.query(MonitoredModel).filter_by(name="bot").one()
        # the model view reads these columns only; the profile itself is the pipeline's
        row = Baseline(model_id=model.id, reference_id=stored_reference, name="bot-v1",
                       sha256="ab" * 32, source="upload", document_count=500,
                       token_count=40_000, profile=b"", human_ratios=ratios)
        s.add(row)
        s.flush()
        model.baseline_id = row.id
    body = client.get(f"{MODELS}/bot").json()
    assert body["baseline_status"] == "set"
    assert body["baseline"]["name"] == "bot-v1"
    assert body["baseline"]["sha256"] == "ab" * 32
    assert body["baseline"]["human_ratios"] == ratios
    assert body["baseline"]["document_count"] == 500


def test_patch_changes_only_the_fields_sent(client, admin_headers, stored_reference):
    _create(client, admin_headers, name="bot", reference_id=stored_reference,
            window={"size": 300, "max_age_seconds": 600, "min_size": 30}, description="d")
    r = client.patch(f"{MODELS}/bot", json={"window": {"size": 400}}, headers=admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["window"] == {"size": 400, "max_age_seconds": 600, "min_size": 30}
    assert r.json()["description"] == "d"
    r = client.patch(f"{MODELS}/bot", json={"window": {"max_age_seconds": None},
                                            "description": None, "auto_baseline_windows": 0},
                     headers=admin_headers)
    body = r.json()
    assert body["window"] == {"size": 400, "max_age_seconds": None, "min_size": 30}
    assert body["description"] is None and body["auto_baseline_windows"] == 0


def test_patch_switches_the_reference_and_clears_the_baseline(
        client, admin_headers, stored_reference, reference_profile, reference_documents):
    from service.domain.db import session_scope
    from service.domain.tables import MonitoredModel

    _create(client, admin_headers, name="bot", reference_id=stored_reference)
    with session_scope() as s:
        s.query(MonitoredModel).filter_by(name="bot").one().baseline_id = 12345
    second = store_reference(reference_profile, reference_documents, version=2)
    r = client.patch(f"{MODELS}/bot", json={"reference_id": second}, headers=admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["reference"]["id"] == second and r.json()["reference"]["version"] == 2
    assert r.json()["baseline"] is None
    with session_scope() as s:
        assert s.query(MonitoredModel).filter_by(name="bot").one().baseline_id is None


# ---------------------------------------------------------------- bad input


def test_duplicate_model_name_is_409(client, admin_headers, stored_reference):
    _create(client, admin_headers, name="bot", reference_id=stored_reference)
    before = stored_state()
    r = _create(client, admin_headers, name="bot", reference_id=stored_reference,
                window={"size": 100})
    assert_problem(r, 409, "already exists")
    assert stored_state() == before


@pytest.mark.parametrize(("body", "words"), [
    ({"name": "bot", "reference_id": 999}, ["reference_id", "999"]),
    ({"name": "bot", "reference_id": 2**70}, ["reference_id"]),
    ({"name": "has space", "reference_id": 1}, ["name"]),
    ({"name": "a/b", "reference_id": 1}, ["name"]),
    ({"name": "", "reference_id": 1}, ["name"]),
    ({"name": "bot"}, ["reference_id", "required"]),
    ({"name": "bot", "reference_id": 1, "window": {"size": 10, "min_size": 20}},
     ["min_size", "size"]),
    ({"name": "bot", "reference_id": 1, "window": {"size": 0}}, ["window.size"]),
    ({"name": "bot", "reference_id": 1, "window": {"max_age_seconds": -5}},
     ["window.max_age_seconds"]),
    ({"name": "bot", "reference_id": 1, "windw": {}}, ["windw"]),
    ({"name": "bot", "reference_id": 1, "auto_baseline_windows": -1},
     ["auto_baseline_windows"]),
], ids=["unknown-reference", "huge-reference-id", "space", "slash", "empty-name", "no-reference", "min-over-size",
        "zero-size", "negative-age", "typo", "negative-auto-baseline"])
def test_invalid_model_is_422(client, admin_headers, stored_reference, body, words):
    assert stored_reference == 1
    before = stored_state()
    assert_problem(_create(client, admin_headers, **body), 422, *words)
    assert stored_state() == before


@pytest.mark.parametrize(("body", "words"), [
    ({"reference_id": 999}, ["reference_id", "999"]),
    ({"reference_id": -1}, ["reference_id"]),
    ({"reference_id": None}, ["reference_id"]),
    ({"window": {"min_size": 1000}}, ["min_size"]),
    ({"window": None}, ["window"]),
    ({"window": {"size": None}}, ["size"]),
    ({"name": "rename"}, ["name"]),
], ids=["unknown-reference", "negative-reference", "null-reference", "min-over-size", "null-window", "null-size",
        "rename"])
def test_invalid_patch_is_422(client, admin_headers, stored_reference, body, words):
    _create(client, admin_headers, name="bot", reference_id=stored_reference)
    before = stored_state()
    r = client.patch(f"{MODELS}/bot", json=body, headers=admin_headers)
    assert_problem(r, 422, *words)
    assert stored_state() == before


def test_unknown_model_is_404(client, admin_headers, stored_reference):
    assert_problem(client.get(f"{MODELS}/nope"), 404, "'nope'")
    before = stored_state()
    assert_problem(client.patch(f"{MODELS}/nope", json={"description": "x"},
                                headers=admin_headers), 404, "'nope'")
    assert stored_state() == before


def test_model_writes_need_an_admin_key(client, make_key, admin_headers, stored_reference):
    _create(client, admin_headers, name="bot", reference_id=stored_reference)
    ingest = {"Authorization": f"Bearer {make_key('ingest', 'bot')}"}
    before = stored_state()
    body = {"name": "new", "reference_id": stored_reference}
    assert_problem(client.post(MODELS, json=body), 401, "admin")
    assert_problem(client.post(MODELS, json=body, headers=ingest), 403, "admin")
    assert_problem(client.patch(f"{MODELS}/bot", json={"description": "x"}, headers=ingest),
                   403, "admin")
    assert_problem(client.patch(f"{MODELS}/bot", json={"description": "x"}), 401)
    assert stored_state() == before


def test_admin_key_scoped_to_a_model_cannot_touch_another(client, make_key, admin_headers,
                                                          stored_reference):
    _create(client, admin_headers, name="bot", reference_id=stored_reference)
    scoped = {"Authorization": f"Bearer {make_key('admin', 'bot')}"}
    before = stored_state()
    r = client.post(MODELS, json={"name": "other", "reference_id": stored_reference},
                    headers=scoped)
    assert_problem(r, 403, "scoped to model 'bot'")
    assert stored_state() == before
    ok = client.patch(f"{MODELS}/bot", json={"description": "mine"}, headers=scoped)
    assert ok.status_code == 200
