"""Input limits: attributes size, JSON nesting, reference document length, ids out of range,
NUL bytes in paths and queries, and a baseline time range read in chunks. Every rejection
is a 4xx problem and leaves what is stored unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from service.settings import get_settings
from tests.service.api_fixtures import REFERENCE_SIZE, assert_problem, samples, stored_state

HUGE_ID = "99999999999999999999"


def nested(depth: int, leaf=1):
    """``{"a": {"a": ... leaf}}`` as JSON text, ``depth`` objects deep (built as text: the
    json module cannot serialise what it cannot parse either)."""
    return '{"a":' * depth + json.dumps(leaf) + "}" * depth


def set_env(monkeypatch, **values) -> None:
    for key, value in values.items():
        monkeypatch.setenv(f"COLLAPSEWATCH_{key.upper()}", str(value))
    get_settings.cache_clear()


# ---------------------------------------------------------------- attributes


def test_attributes_over_16_kib_are_422_naming_the_field(client, model_name, ingest_headers):
    url = f"/api/v1/models/{model_name}/samples"
    batch = samples(3)
    batch[0]["attributes"] = {"note": "x" * 16_000}  # under the limit
    batch[2]["attributes"] = {"note": "x" * (16 * 1024)}  # over it, once serialised
    before = stored_state()
    body = assert_problem(client.post(url, headers=ingest_headers, json={"samples": batch}),
                          422, "samples.2.attributes", "16384")
    assert body["errors"][0]["field"] == "samples.2.attributes"
    # the 9 MB attributes of the issue report
    big = samples(1, prefix="big")
    big[0]["attributes"] = {"blob": "y" * 9_000_000}
    r = client.post(url, headers=ingest_headers, json={"samples": big})
    assert r.status_code in (413, 422), r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert stored_state() == before
    del batch[2]["attributes"]
    assert client.post(url, headers=ingest_headers, json={"samples": batch}).status_code == 202


# ---------------------------------------------------------------- JSON nesting


@pytest.mark.parametrize("depth", [70, 100_000])
def test_deeply_nested_json_bodies_are_422(client, model_name, ingest_headers, admin_headers,
                                           depth):
    before = stored_state()
    sample = '{"id": "deep", "text": "hello", "attributes": ' + nested(depth) + "}"
    for method, url, body, headers in (
        ("POST", f"/api/v1/models/{model_name}/samples", '{"samples": [' + sample + "]}",
         ingest_headers),
        ("POST", "/api/v1/channels", '{"name": "c", "kind": "webhook", "config": '
         + nested(depth) + "}", admin_headers),
        ("POST", "/api/v1/references", '{"name": "deep", "documents": ' + "[" * depth
         + "]" * depth + "}", admin_headers),
        ("PATCH", f"/api/v1/models/{model_name}", '{"description": ' + nested(depth) + "}",
         admin_headers),
    ):
        r = client.request(method, url, content=body,
                           headers={**headers, "content-type": "application/json"})
        assert_problem(r, 422, "nested more than")
    assert stored_state() == before
    # ordinary nesting still passes
    ok = '{"samples": [{"id": "ok", "text": "hi", "attributes": ' + nested(10) + "}]}"
    r = client.post(f"/api/v1/models/{model_name}/samples", content=ok,
                    headers={**ingest_headers, "content-type": "application/json"})
    assert r.status_code == 202, r.text


def test_a_deeply_nested_jsonl_line_in_a_reference_upload_is_422_with_its_line(
        client, service_env, admin_headers, human_documents):
    lines = [json.dumps({"text": d}) for d in human_documents[:REFERENCE_SIZE]]
    lines.insert(2, "[" * 50_000 + "]" * 50_000)
    before = stored_state()
    r = client.post("/api/v1/references", headers=admin_headers,
                    files={"file": ("human.jsonl", "\n".join(lines).encode(),
                                    "application/jsonl")})
    assert_problem(r, 422, "line 3", "nested")
    assert stored_state() == before


# ---------------------------------------------------------------- reference document length


def test_reference_documents_over_the_length_limit_are_422_with_their_line(
        client, service_env, admin_headers, human_documents, monkeypatch):
    set_env(monkeypatch, max_reference_document_chars=2000)
    docs = list(human_documents[:REFERENCE_SIZE])
    docs[4] = "word " * 401  # 2005 characters
    before = stored_state()
    jsonl = "\n".join(json.dumps({"text": d}) for d in docs).encode()
    r = client.post("/api/v1/references", headers=admin_headers,
                    files={"file": ("human.jsonl", jsonl, "application/jsonl")})
    assert_problem(r, 422, "line 5", "2005 characters", "2000")
    txt = "\n".join(d.replace("\n", " ") for d in docs).encode()
    r = client.post("/api/v1/references", headers=admin_headers,
                    files={"file": ("human.txt", txt, "text/plain")})
    assert_problem(r, 422, "line 5", "2000")
    r = client.post("/api/v1/references", headers=admin_headers,
                    json={"name": "long", "documents": docs})
    body = assert_problem(r, 422, "documents.4", "2000")
    assert body["errors"][0]["field"] == "documents.4"
    assert stored_state() == before
    docs[4] = "word " * 399
    r = client.post("/api/v1/references", headers=admin_headers,
                    json={"name": "long", "documents": docs})
    assert r.status_code == 201, r.text


# ---------------------------------------------------------------- ids and NUL bytes


def test_ids_out_of_range_are_404(client, model_name, admin_headers):
    before = stored_state()
    for method, url in (
        ("GET", f"/api/v1/alerts/{HUGE_ID}"),
        ("GET", "/api/v1/alerts/-1"),
        ("GET", "/api/v1/alerts/0"),
        ("GET", f"/api/v1/alerts/{2**63}"),
        ("POST", f"/api/v1/alerts/{HUGE_ID}/ack"),
        ("GET", f"/api/v1/channels/{HUGE_ID}"),
        ("GET", f"/api/v1/channels/{2**40}"),  # fits 64 bits, not the 32-bit column
        ("GET", f"/api/v1/alerts/{2**40}"),
        ("POST", f"/api/v1/channels/{HUGE_ID}/retry"),
        ("DELETE", f"/api/v1/channels/{HUGE_ID}"),
        ("GET", f"/api/v1/references/{HUGE_ID}"),
        ("GET", "/api/v1/references/0"),
        ("GET", "/api/v1/references/not-a-number"),
        # found by the fuzzer: a 500 (OverflowError on SQLite, bigint out of range on PostgreSQL)
        ("GET", f"/api/v1/models/{model_name}/evaluations/{HUGE_ID}"),
        ("GET", f"/api/v1/models/{model_name}/evaluations/{2**63}"),
        ("GET", f"/api/v1/models/{model_name}/evaluations/0"),
    ):
        assert_problem(client.request(method, url, headers=admin_headers), 404)
    assert stored_state() == before


def test_nul_bytes_in_path_or_query_are_refused(client, model_name, admin_headers,
                                                ingest_headers):
    before = stored_state()
    for method, url, status in (
        ("GET", "/api/v1/models/bo%00t", 404),
        ("GET", "/api/v1/models/bo%00t/evaluations", 404),
        ("POST", "/api/v1/models/bo%00t/samples", 404),
        ("GET", "/api/v1/models/bot/baseline/%00", 404),
        ("GET", "/api/v1/alerts?model=bo%00t", 422),
        ("GET", "/api/v1/alerts?state=%00", 422),
        ("GET", "/api/v1/models/bot/evaluations?status=done%00", 422),
    ):
        headers = ingest_headers if method == "POST" else admin_headers
        kwargs = {"json": {"samples": samples(1)}} if method == "POST" else {}
        r = client.request(method, url, headers=headers, **kwargs)
        assert r.status_code == status, (url, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert stored_state() == before


# ---------------------------------------------------------------- baseline from a time range


def test_a_baseline_from_a_time_range_is_read_in_chunks(client, model_name, ingest_headers,
                                                        human_documents, monkeypatch):
    """The range is read a page at a time: counted on the real queries the database gets
    (building the profile from the range, through the API, is test_baselines_api's)."""
    from sqlalchemy.engine import Engine

    set_env(monkeypatch, baseline_range_chunk_rows=50)
    t = datetime(2026, 3, 1, tzinfo=UTC)
    docs = human_documents[REFERENCE_SIZE + 3000:REFERENCE_SIZE + 3210]
    batch = [{"id": f"r{i}", "text": d, "timestamp": (t + timedelta(seconds=i)).isoformat()}
             for i, d in enumerate(docs)]
    for start in range(0, len(batch), 105):
        r = client.post(f"/api/v1/models/{model_name}/samples", headers=ingest_headers,
                        json={"samples": batch[start:start + 105]})
        assert r.status_code == 202, r.text
    reads: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _many):
        flat = " ".join(statement.split()).lower()
        if flat.startswith("select") and "samples.text" in flat and "from samples" in flat:
            reads.append(flat)

    from service.domain.baselines import documents_in_range
    from service.domain.catalog import get_model
    from service.domain.db import session_scope

    engine = Engine  # every engine of this process
    event.listen(engine, "before_cursor_execute", count)
    try:
        with session_scope() as session:
            found = documents_in_range(session, get_model(session, model_name), t,
                                       t + timedelta(seconds=209), get_settings())
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(found.texts) == 210 and found.last_id - found.first_id == 209
    # 210 rows at 50 a page: 4 full pages and a last one of 10
    assert len(reads) == 5, reads
    assert all(" limit " in q for q in reads)
