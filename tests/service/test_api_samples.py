"""POST /api/v1/models/{name}/samples: batched, idempotent ingest and its bad inputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select

from tests.service.api_fixtures import assert_problem, samples, stored_state

URL = "/api/v1/models/bot/samples"


def _stored_samples():
    from service.domain.db import session_scope
    from service.domain.tables import Sample

    with session_scope() as s:
        return s.execute(select(Sample).order_by(Sample.id)).scalars().all()


def _model_row():
    from service.domain.db import session_scope
    from service.domain.tables import MonitoredModel

    with session_scope() as s:
        return s.scalar(select(MonitoredModel).where(MonitoredModel.name == "bot"))


def test_batch_is_accepted_with_202_and_counts(client, ingest_headers):
    r = client.post(URL, json={"samples": samples(10)}, headers=ingest_headers)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 10, "duplicates": 0}
    assert [s.client_id for s in _stored_samples()] == [f"s{i}" for i in range(10)]


def test_duplicate_ids_inside_one_batch_are_stored_once(client, ingest_headers):
    batch = samples(3) + [{"id": "s1", "text": "a different text, same id"}, samples(1)[0]]
    r = client.post(URL, json={"samples": batch}, headers=ingest_headers)
    assert r.json() == {"accepted": 3, "duplicates": 2}
    stored = _stored_samples()
    assert sorted(s.client_id for s in stored) == ["s0", "s1", "s2"]
    # the first occurrence wins
    assert next(s.text for s in stored if s.client_id == "s1") == "output number 1 of the model"


def test_duplicate_ids_across_batches_are_stored_once(client, ingest_headers):
    first = client.post(URL, json={"samples": samples(5)}, headers=ingest_headers).json()
    retry = client.post(URL, json={"samples": samples(5)}, headers=ingest_headers).json()
    overlap = client.post(URL, json={"samples": samples(5, start=3)}, headers=ingest_headers)
    assert first == {"accepted": 5, "duplicates": 0}
    assert retry == {"accepted": 0, "duplicates": 5}
    assert overlap.json() == {"accepted": 3, "duplicates": 2}
    assert len(_stored_samples()) == 8
    assert _model_row().samples_ingested == 8


def test_same_id_for_two_models_is_two_samples(client, admin_headers, stored_reference):
    for name in ("a", "b"):
        client.post("/api/v1/models", json={"name": name, "reference_id": stored_reference},
                    headers=admin_headers)
        r = client.post(f"/api/v1/models/{name}/samples",
                        json={"samples": [{"id": "same", "text": "t"}]}, headers=admin_headers)
        assert r.json() == {"accepted": 1, "duplicates": 0}
    assert len(_stored_samples()) == 2


def test_model_counters_follow_ingest(client, ingest_headers):
    before = datetime.now(UTC)
    client.post(URL, json={"samples": samples(4)}, headers=ingest_headers)
    body = client.get("/api/v1/models/bot").json()
    assert body["samples_ingested"] == 4
    last = datetime.fromisoformat(body["last_sample_at"])
    assert last >= before.replace(microsecond=0)
    # a pure retry stores nothing and leaves the counters alone
    client.post(URL, json={"samples": samples(4)}, headers=ingest_headers)
    again = client.get("/api/v1/models/bot").json()
    assert again["samples_ingested"] == 4
    assert again["last_sample_at"] == body["last_sample_at"]


def test_sample_fields_are_stored(client, ingest_headers):
    batch = [{"id": 17, "text": "héllo wörld ✓", "prompt": "say hi",
              "timestamp": "2024-05-01T12:00:00+02:00", "attributes": {"temp": 0.7, "k": [1]}},
             {"id": "naive", "text": "x", "timestamp": "2024-05-01T12:00:00"},
             {"id": "epoch", "text": "", "timestamp": 1714564800}]
    r = client.post(URL, json={"samples": batch}, headers=ingest_headers)
    assert r.json() == {"accepted": 3, "duplicates": 0}
    rows = {s.client_id: s for s in _stored_samples()}
    first = rows["17"]
    assert (first.text, first.prompt, first.attributes) == ("héllo wörld ✓", "say hi",
                                                            {"temp": 0.7, "k": [1]})

    def utc(ts):
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)

    assert utc(first.timestamp) == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert utc(rows["naive"].timestamp) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert utc(rows["epoch"].timestamp) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert rows["epoch"].prompt is None and rows["epoch"].text == ""


def test_attributes_hold_any_json(client, ingest_headers):
    attributes = {"nul": "a\u0000b", "lone": "\ud800", "nested": {"list": [1, 2.5, None, True]},
                  "unicode": "日本語"}
    body = json.dumps({"samples": [{"id": "a", "text": "t", "attributes": attributes}]})
    r = _raw(client, body.encode(), ingest_headers)
    assert r.json() == {"accepted": 1, "duplicates": 0}
    assert _stored_samples()[0].attributes == attributes


def test_a_batch_is_one_insert_statement(client, ingest_headers):
    from service.domain.db import session_factory

    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "INSERT INTO SAMPLES" in statement.upper():
            statements.append(statement)

    engine = session_factory().kw["bind"]
    event.listen(engine, "before_cursor_execute", record)
    try:
        r = client.post(URL, json={"samples": samples(500)}, headers=ingest_headers)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert r.json() == {"accepted": 500, "duplicates": 0}
    assert len(statements) == 1
    assert "ON CONFLICT" in statements[0].upper()


def test_admin_key_may_ingest(client, admin_headers, model_name):
    r = client.post(URL, json={"samples": samples(1)}, headers=admin_headers)
    assert r.status_code == 202


# ---------------------------------------------------------------- bad input


@pytest.fixture
def limited_client(service_env, monkeypatch, model_name):
    """A second app with small limits (body 4 KB, 100 characters, 5 samples per batch)."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("COLLAPSEWATCH_MAX_TEXT_CHARS", "100")
    monkeypatch.setenv("COLLAPSEWATCH_MAX_BATCH_SIZE", "5")
    get_settings.cache_clear()
    with TestClient(create_app()) as c:
        yield c
    get_settings.cache_clear()


def _raw(client, body: bytes, headers, content_type="application/json"):
    return client.post(URL, content=body, headers={**headers, "content-type": content_type})


def test_unknown_model_is_404(client, admin_headers, model_name):
    before = stored_state()
    r = client.post("/api/v1/models/nope/samples", json={"samples": samples(2)},
                    headers=admin_headers)
    assert_problem(r, 404, "'nope'", "does not exist")
    assert stored_state() == before


def test_missing_key_is_401(client, model_name):
    before = stored_state()
    r = client.post(URL, json={"samples": samples(2)})
    assert_problem(r, 401, "API key", "ingest")
    assert r.headers["www-authenticate"] == "Bearer"
    assert stored_state() == before


def test_invalid_key_is_401(client, model_name):
    before = stored_state()
    r = client.post(URL, json={"samples": samples(2)},
                    headers={"Authorization": "Bearer cw_not-a-real-key"})
    assert_problem(r, 401, "unknown or revoked")
    assert stored_state() == before


def test_read_key_cannot_ingest_403(client, make_key, model_name):
    headers = {"Authorization": f"Bearer {make_key('read')}"}
    before = stored_state()
    r = client.post(URL, json={"samples": samples(2)}, headers=headers)
    assert_problem(r, 403, "read")
    assert stored_state() == before


def test_key_scoped_to_another_model_is_403(client, make_key, admin_headers, stored_reference):
    client.post("/api/v1/models", json={"name": "other", "reference_id": stored_reference},
                headers=admin_headers)
    client.post("/api/v1/models", json={"name": "bot", "reference_id": stored_reference},
                headers=admin_headers)
    key = make_key("ingest", "other")
    before = stored_state()
    r = client.post(URL, json={"samples": samples(2)}, headers={"Authorization": f"Bearer {key}"})
    assert_problem(r, 403, "scoped to model 'other'", "'bot'")
    assert stored_state() == before
    ok = client.post("/api/v1/models/other/samples", json={"samples": samples(2)},
                     headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 202


def test_body_over_the_limit_is_413(limited_client, ingest_headers):
    before = stored_state()
    big = {"samples": [{"id": f"x{i}", "text": "y" * 90} for i in range(5)] * 10}
    r = limited_client.post(URL, json=big, headers=ingest_headers)
    assert_problem(r, 413, "4096")
    assert stored_state() == before


def test_body_over_the_limit_without_content_length_is_413(limited_client, ingest_headers):
    before = stored_state()
    chunks = (b'{"samples": [' + b'{"id": "a", "text": "bbbbbbbbbb"},' * 20 for _ in range(10))
    r = limited_client.post(URL, content=chunks,
                            headers={**ingest_headers, "content-type": "application/json"})
    assert_problem(r, 413, "limit")
    assert stored_state() == before


def test_text_over_the_limit_is_422_naming_the_field(limited_client, ingest_headers):
    before = stored_state()
    batch = samples(2) + [{"id": "long", "text": "z" * 101}]
    r = limited_client.post(URL, json={"samples": batch}, headers=ingest_headers)
    body = assert_problem(r, 422, "samples.2.text", "100")
    assert body["errors"][0]["field"] == "samples.2.text"
    assert stored_state() == before


def test_prompt_over_the_limit_is_422(limited_client, ingest_headers):
    before = stored_state()
    r = limited_client.post(URL, json={"samples": [{"id": "p", "text": "t", "prompt": "q" * 101}]},
                            headers=ingest_headers)
    assert_problem(r, 422, "samples.0.prompt")
    assert stored_state() == before


def test_batch_over_the_limit_is_422(limited_client, ingest_headers):
    before = stored_state()
    r = limited_client.post(URL, json={"samples": samples(6)}, headers=ingest_headers)
    assert_problem(r, 422, "6 samples", "limit is 5")
    assert stored_state() == before


def test_empty_batch_is_422(client, ingest_headers):
    before = stored_state()
    assert_problem(client.post(URL, json={"samples": []}, headers=ingest_headers), 422,
                   "samples", "at least 1")
    assert stored_state() == before


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"samples": [{"id": "a", "text": "b"}', ["malformed JSON"]),
        (b"not json at all", ["malformed JSON"]),
        (b'{"samples": [{"id": "a"}]}', ["samples.0.text", "required"]),
        (b'{"samples": [{"text": "no id"}]}', ["samples.0.id", "required"]),
        (b'{"samples": [{"id": "a", "text": 5}]}', ["samples.0.text", "string"]),
        (b'{"samples": [{"id": "", "text": "b"}]}', ["samples.0.id"]),
        (b'{"samples": [{"id": "a", "text": "b", "txt": "typo"}]}', ["samples.0.txt"]),
        (b'{"samples": [{"id": "a", "text": "b", "timestamp": "yesterday"}]}',
         ["samples.0.timestamp"]),
        (b'{"samples": [{"id": "a", "text": "b", "attributes": [1]}]}',
         ["samples.0.attributes"]),
        (b'{"sample": []}', ["samples", "required"]),
        (b'[]', ["body"]),
        (b'{"samples": [{"id": "a", "text": "lone \\ud800 surrogate"}]}',
         ["samples.0.text", "surrogate"]),
        (b'{"samples": [{"id": "a", "text": "nul \\u0000 inside"}]}', ["samples.0.text", "NUL"]),
        (b'{"samples": [{"id": "a\\u0000", "text": "b"}]}', ["samples.0.id", "NUL"]),
    ],
    ids=["truncated", "not-json", "missing-text", "missing-id", "text-not-string", "empty-id",
         "unknown-field", "bad-timestamp", "attributes-not-object", "missing-samples",
         "not-an-object", "lone-surrogate", "nul-in-text", "nul-in-id"],
)
def test_invalid_body_is_422_naming_the_field(client, ingest_headers, body, words):
    before = stored_state()
    assert_problem(_raw(client, body, ingest_headers), 422, *words)
    assert stored_state() == before


@pytest.mark.parametrize("body", [
    b'{"samples": [{"id": "a", "text": "caf\xe9"}]}',          # Latin-1, not UTF-8
    b'{"samples": [{"id": "a", "text": "\xed\xa0\x80"}]}',     # an encoded surrogate
    b'{"samples": [{"id": "a", "text": "\xff\xfe"}]}',
], ids=["latin-1", "encoded-surrogate", "invalid-bytes"])
def test_invalid_utf8_is_rejected_with_a_clear_message(client, ingest_headers, body):
    before = stored_state()
    r = _raw(client, body, ingest_headers)
    assert r.status_code in (400, 422)
    assert_problem(r, r.status_code)
    detail = r.json()["detail"].lower()
    assert "utf-8" in detail or "surrogate" in detail
    assert stored_state() == before


def test_body_that_is_not_json_content_is_422(client, ingest_headers):
    before = stored_state()
    r = _raw(client, b'{"samples": [{"id": "a", "text": "b"}]}', ingest_headers,
             content_type="text/plain")
    assert_problem(r, 422)
    assert stored_state() == before
