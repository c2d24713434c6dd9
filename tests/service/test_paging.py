"""Cursor paging on lists (limit, cursor -> next_cursor) and per-model retention/series
settings over REST."""

from __future__ import annotations

from tests.service.alert_fixtures import add_evaluation
from tests.service.api_fixtures import assert_problem, store_reference
from tests.support.paging import all_pages

MODELS = "/api/v1/models"


def _make_models(client, headers, reference_id, names):
    for name in names:
        r = client.post(MODELS, json={"name": name, "reference_id": reference_id},
                        headers=headers)
        assert r.status_code == 201, r.text


def test_models_page_by_name_without_repeats(client, admin_headers, stored_reference):
    names = ["echo", "alpha", "delta", "bravo", "charlie"]
    _make_models(client, admin_headers, stored_reference, names)
    pages = all_pages(client, MODELS, "models", admin_headers, limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [m["name"] for p in pages for m in p] == sorted(names)
    # without a limit: the first 100
    assert len(client.get(MODELS, headers=admin_headers).json()["models"]) == 5


def test_a_model_limited_key_pages_over_its_model_only(client, admin_headers, make_key,
                                                       stored_reference):
    _make_models(client, admin_headers, stored_reference, ["a", "b", "c"])
    headers = {"Authorization": f"Bearer {make_key('read', 'b')}"}
    pages = all_pages(client, MODELS, "models", headers, limit=1)
    assert [m["name"] for p in pages for m in p] == ["b"]


def test_references_page_by_name_and_version(client, admin_headers, reference_profile,
                                             reference_documents):
    for name, version in (("news", 2), ("books", 1), ("news", 1), ("chat", 1)):
        store_reference(reference_profile, reference_documents, name=name, version=version)
    pages = all_pages(client, "/api/v1/references", "references", admin_headers, limit=3)
    assert [len(p) for p in pages] == [3, 1]
    assert [(r["name"], r["version"]) for p in pages for r in p] == [
        ("books", 1), ("chat", 1), ("news", 1), ("news", 2)]


def test_evaluations_page_newest_first_and_new_windows_do_not_shift_pages(
        client, admin_headers, model_name):
    from service.domain.db import session_scope
    from service.domain.tables import MonitoredModel

    with session_scope() as s:
        model_id = s.query(MonitoredModel.id).filter_by(name=model_name).scalar()
    ids = [add_evaluation(model_id, "healthy") for _ in range(5)]
    url = f"{MODELS}/{model_name}/evaluations"
    first = client.get(url, params={"limit": 2}, headers=admin_headers).json()
    assert [e["id"] for e in first["evaluations"]] == ids[::-1][:2]
    add_evaluation(model_id, "collapse")  # a new window arrives between pages
    rest = all_pages(client, url, "evaluations", admin_headers, limit=2,
                      cursor=first["next_cursor"])
    assert [e["id"] for p in rest for e in p] == ids[::-1][2:]


def test_a_cursor_not_from_next_cursor_is_422(client, admin_headers, model_name):
    for url in (MODELS, "/api/v1/references", f"{MODELS}/{model_name}/evaluations"):
        for bad in ("not-a-cursor", "WzEsMiwzXQ", "x" * 600):
            r = client.get(url, params={"cursor": bad}, headers=admin_headers)
            assert r.status_code == 422, (url, bad, r.text)
    assert_problem(client.get(MODELS, params={"cursor": "@@"}, headers=admin_headers), 422,
                   "cursor")
    assert client.get(MODELS, params={"limit": 0}, headers=admin_headers).status_code == 422
    assert client.get(MODELS, params={"limit": 1001},
                      headers=admin_headers).status_code == 422


def test_retention_and_metric_series_are_set_per_model(client, admin_headers,
                                                       stored_reference):
    r = client.post(MODELS, json={"name": "bot", "reference_id": stored_reference,
                                  "samples_days": 7, "metric_series": True},
                    headers=admin_headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["samples_days"], body["evaluations_days"], body["metric_series"]) == (
        7, None, True)
    r = client.patch(f"{MODELS}/bot", json={"evaluations_days": 90, "samples_days": None},
                     headers=admin_headers)
    assert r.status_code == 200, r.text
    assert (r.json()["samples_days"], r.json()["evaluations_days"]) == (None, 90)
    assert_problem(client.patch(f"{MODELS}/bot", json={"evaluations_days": 0},
                                headers=admin_headers), 422)
