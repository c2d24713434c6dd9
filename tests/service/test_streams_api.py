"""Streams over REST: POST/PATCH /api/v1/models with kind, sources and max_synthetic_share.

The sources are real baselines uploaded through the baseline route; every check runs on
SQLite and PostgreSQL (``database_url``).
"""

from __future__ import annotations

import pytest

from tests.service.api_fixtures import assert_problem, store_reference, stored_state

MODELS = "/api/v1/models"


def _baseline_of(client, headers, model: str, profile) -> int:
    """Pin ``profile`` as ``model``'s baseline through the API; its id."""
    r = client.post(f"{MODELS}/{model}/baseline", headers=headers,
                    files={"profile": ("baseline.cwp", profile.to_bytes(),
                                       "application/octet-stream")})
    assert r.status_code == 201, r.text
    return r.json()["baseline"]["id"]


@pytest.fixture
def source_id(client, admin_headers, stored_reference, baseline_profile) -> int:
    """A baseline of another model (the generator), built against the stored reference."""
    r = client.post(MODELS, headers=admin_headers,
                    json={"name": "generator", "reference_id": stored_reference})
    assert r.status_code == 201, r.text
    return _baseline_of(client, admin_headers, "generator", baseline_profile)


def test_a_model_is_of_kind_model_without_sources(client, admin_headers, stored_reference):
    r = client.post(MODELS, headers=admin_headers,
                    json={"name": "bot", "reference_id": stored_reference})
    body = r.json()
    assert body["kind"] == "model" and body["sources"] == []
    assert body["max_synthetic_share"] is None


def test_create_a_stream_with_sources_and_a_share_limit(client, admin_headers,
                                                        stored_reference, source_id):
    r = client.post(MODELS, headers=admin_headers, json={
        "name": "crawl", "reference_id": stored_reference, "kind": "stream",
        "sources": [source_id], "max_synthetic_share": 0.1})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["kind"] == "stream" and body["sources"] == [source_id]
    assert body["max_synthetic_share"] == 0.1
    assert client.get(f"{MODELS}/crawl").json() == body
    listed = {m["name"]: m for m in client.get(MODELS).json()["models"]}
    assert listed["crawl"]["sources"] == [source_id]
    assert listed["generator"]["kind"] == "model"


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"kind": "stream", "sources": [999]}, 422, ("sources[0]", "baseline 999", "not exist")),
    ({"kind": "stream"}, 422, ("sources", "at least one")),
    ({"kind": "stream", "sources": []}, 422, ("sources", "at least one")),
    ({"sources": ["SOURCE"]}, 422, ("only a stream",)),
    ({"max_synthetic_share": 0.2}, 422, ("only a stream",)),
    ({"kind": "stream", "sources": ["SOURCE"], "max_synthetic_share": 1.5}, 422,
     ("max_synthetic_share",)),
    ({"kind": "stream", "sources": ["SOURCE"], "max_synthetic_share": -0.1}, 422,
     ("max_synthetic_share",)),
    ({"kind": "river", "sources": ["SOURCE"]}, 422, ("kind",)),
    ({"kind": "stream", "sources": ["SOURCE", "SOURCE"]}, 422, ("distinct",)),
    ({"kind": "stream", "sources": ["SOURCE", 999]}, 422, ("sources[1]", "baseline 999")),
    ({"kind": "stream", "sources": [1, 2, 3, 4]}, 422, ("sources",)),
])
def test_bad_stream_fields_are_422_and_store_nothing(client, admin_headers, stored_reference,
                                                     source_id, body, status, words):
    before = stored_state()
    body = {**body, "name": "crawl", "reference_id": stored_reference}
    if "sources" in body:
        body["sources"] = [source_id if s == "SOURCE" else s for s in body["sources"]]
    assert_problem(client.post(MODELS, headers=admin_headers, json=body), status, *words)
    assert stored_state() == before


def test_a_source_built_against_another_reference_is_422(client, admin_headers, source_id,
                                                         human_documents):
    import metrics

    docs = human_documents[9000:9240]
    other = store_reference(metrics.build_reference(docs, "other"), docs, name="other")
    r = client.post(MODELS, headers=admin_headers, json={
        "name": "crawl", "reference_id": other, "kind": "stream", "sources": [source_id]})
    assert_problem(r, 422, "sources[0]", f"baseline {source_id}", "another reference")


def test_patch_turns_a_model_into_a_stream_and_back(client, admin_headers, stored_reference,
                                                    source_id):
    client.post(MODELS, headers=admin_headers,
                json={"name": "crawl", "reference_id": stored_reference})
    url = f"{MODELS}/crawl"
    # a model with sources is refused, and nothing changes
    assert_problem(client.patch(url, headers=admin_headers, json={"sources": [source_id]}),
                   422, "only a stream")
    assert client.get(url).json()["sources"] == []
    r = client.patch(url, headers=admin_headers,
                     json={"kind": "stream", "sources": [source_id]})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "stream" and r.json()["sources"] == [source_id]
    r = client.patch(url, headers=admin_headers, json={"max_synthetic_share": 0.25})
    assert r.json()["max_synthetic_share"] == 0.25 and r.json()["sources"] == [source_id]
    # a stream cannot lose its last source
    assert_problem(client.patch(url, headers=admin_headers, json={"sources": None}),
                   422, "at least one")
    assert_problem(client.patch(url, headers=admin_headers, json={"sources": [12345]}),
                   422, "baseline 12345")
    # back to a model: its stream fields go with it, or it is refused
    assert_problem(client.patch(url, headers=admin_headers, json={"kind": "model"}),
                   422, "only a stream")
    r = client.patch(url, headers=admin_headers,
                     json={"kind": "model", "sources": None, "max_synthetic_share": None})
    assert r.status_code == 200, r.text
    assert (r.json()["kind"], r.json()["sources"], r.json()["max_synthetic_share"]) == (
        "model", [], None)


def test_patch_to_a_reference_the_sources_do_not_fit_is_422(client, admin_headers,
                                                            stored_reference, source_id,
                                                            human_documents):
    import metrics

    client.post(MODELS, headers=admin_headers, json={
        "name": "crawl", "reference_id": stored_reference, "kind": "stream",
        "sources": [source_id]})
    docs = human_documents[9000:9240]
    other = store_reference(metrics.build_reference(docs, "other"), docs, name="other")
    r = client.patch(f"{MODELS}/crawl", headers=admin_headers, json={"reference_id": other})
    assert_problem(r, 422, "another reference")
    assert client.get(f"{MODELS}/crawl").json()["reference"]["id"] == stored_reference
