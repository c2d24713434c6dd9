"""/api/v1/references: create from JSON or an uploaded file, versions, list, get, bad input."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest

from tests.service.api_fixtures import assert_problem, stored_state

REFS = "/api/v1/references"


def _stored_reference_row(reference_id: int):
    from service.domain.db import session_scope
    from service.domain.tables import Reference

    with session_scope() as s:
        row = s.get(Reference, reference_id)
        return row.documents_gz, row.profile


def test_create_from_json_stores_profile_and_documents(client, admin_headers,
                                                       reference_documents, reference_profile):
    import metrics

    docs = [f"  {d}  " for d in reference_documents] + ["", "   "]
    r = client.post(REFS, json={"name": "fortunes", "documents": docs, "description": "d"},
                    headers=admin_headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "fortunes" and body["version"] == 1
    # surrounding whitespace and blank documents do not change the reference
    assert body["sha256"] == reference_profile.sha256
    assert body["document_count"] == reference_profile.document_count == len(reference_documents)
    assert body["token_count"] == reference_profile.token_count > 0
    assert body["description"] == "d"
    documents_gz, blob = _stored_reference_row(body["id"])
    from metrics.text import normalize_document

    assert json.loads(gzip.decompress(documents_gz)) == [normalize_document(d)
                                                         for d in reference_documents]
    loaded = metrics.Profile.from_bytes(blob)
    assert (loaded.sha256, loaded.kind, loaded.name) == (body["sha256"], "reference", "fortunes")
    assert client.get(f"{REFS}/{body['id']}").json() == body


def test_same_name_makes_a_new_version(client, admin_headers, reference_documents):
    first = client.post(REFS, json={"name": "news", "documents": reference_documents},
                        headers=admin_headers).json()
    changed = reference_documents[1:] + ["one more human document, different from the rest"]
    second = client.post(REFS, json={"name": "news", "documents": changed},
                         headers=admin_headers).json()
    other = client.post(REFS, json={"name": "other", "documents": reference_documents},
                        headers=admin_headers).json()
    assert (first["version"], second["version"], other["version"]) == (1, 2, 1)
    assert first["sha256"] != second["sha256"]
    assert other["sha256"] == first["sha256"]
    listed = client.get(REFS).json()["references"]
    assert [(r["name"], r["version"]) for r in listed] == [("news", 1), ("news", 2),
                                                           ("other", 1)]
    # the first version is unchanged (immutable)
    assert client.get(f"{REFS}/{first['id']}").json() == first


def _jsonl(docs, field="text"):
    return "\n".join(json.dumps({field: d, "id": i}) for i, d in enumerate(docs)).encode()


def _csv(docs, field="text"):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", field])
    for i, d in enumerate(docs):
        writer.writerow([i, d])
    return out.getvalue().encode()


@pytest.mark.parametrize("fmt", ["jsonl", "txt", "csv"])
def test_create_from_an_uploaded_file(client, admin_headers, reference_documents,
                                      reference_profile, fmt):
    # one document per line for .txt: fortunes span lines, so join them
    docs = [" ".join(d.split()) for d in reference_documents]
    data = {"jsonl": _jsonl(docs), "txt": "\n".join(docs).encode(), "csv": _csv(docs)}[fmt]
    r = client.post(REFS, files={"file": (f"human.{fmt}", data)}, headers=admin_headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "human" and body["document_count"] == len(docs)
    as_json = client.post(REFS, json={"name": "human", "documents": docs},
                          headers=admin_headers).json()
    assert as_json["sha256"] == body["sha256"] and as_json["version"] == 2


def test_create_from_a_gzipped_upload(client, admin_headers, reference_documents,
                                      reference_profile):
    data = gzip.compress(_jsonl(reference_documents))
    r = client.post(REFS, files={"file": ("human_sample.jsonl.gz", data)},
                    headers=admin_headers)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "human_sample"
    assert r.json()["sha256"] == reference_profile.sha256


def test_gzip_that_expands_too_far_is_422(client, admin_headers, monkeypatch):
    from service.domain.documents import GZIP_EXPANSION_LIMIT
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_MAX_BODY_BYTES", "100000")
    get_settings.cache_clear()
    bomb = gzip.compress(b"x" * (GZIP_EXPANSION_LIMIT * 100_000 + 10))
    assert len(bomb) < 100_000
    before = stored_state()
    r = client.post(REFS, files={"file": ("bomb.txt.gz", bomb)}, headers=admin_headers)
    assert_problem(r, 422, "decompresses to more than")
    assert stored_state() == before


def test_upload_with_name_field_and_format(client, admin_headers, reference_documents):
    data = _jsonl(reference_documents, field="completion")
    r = client.post(REFS, files={"file": ("dump.data", data)},
                    data={"name": "prod-sample", "field": "completion", "format": "jsonl",
                          "description": "from prod"},
                    headers=admin_headers)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "prod-sample"
    assert r.json()["description"] == "from prod"
    assert r.json()["document_count"] == len(reference_documents)


# ---------------------------------------------------------------- bad input


def test_too_few_documents_is_422_saying_how_many(client, admin_headers, reference_documents):
    from service.settings import get_settings

    needed = get_settings().min_reference_documents
    before = stored_state()
    r = client.post(REFS, json={"name": "tiny", "documents": reference_documents[:needed - 1]},
                    headers=admin_headers)
    body = assert_problem(r, 422, str(needed - 1), f"at least {needed}")
    assert body["needed"] == needed
    assert stored_state() == before


def test_blank_documents_do_not_count_towards_the_minimum(client, admin_headers,
                                                          reference_documents):
    from service.settings import get_settings

    needed = get_settings().min_reference_documents
    before = stored_state()
    docs = reference_documents[:needed - 1] + [" "] * 50
    r = client.post(REFS, json={"name": "tiny", "documents": docs}, headers=admin_headers)
    assert_problem(r, 422, f"at least {needed}")
    assert stored_state() == before


def test_library_minimum_is_reported_too(client, admin_headers, reference_documents,
                                         monkeypatch):
    """A deployment minimum below the library's: the library's ReferenceTooSmall is a 422."""
    import metrics
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_MIN_REFERENCE_DOCUMENTS", "5")
    get_settings.cache_clear()
    before = stored_state()
    r = client.post(REFS, json={"name": "tiny", "documents": reference_documents[:10]},
                    headers=admin_headers)
    with pytest.raises(metrics.ReferenceTooSmall) as expected:
        metrics.build_reference(reference_documents[:10], "tiny")
    assert_problem(r, 422, str(expected.value))
    assert stored_state() == before


@pytest.mark.parametrize(("filename", "data", "form", "words"), [
    ("a.jsonl", b'{"text": "ok"}\n{"text": broken}\n', {}, ["line 2", "not valid JSON"]),
    ("a.jsonl", b'{"text": "ok"}\n{"body": "x"}\n', {}, ["line 2", "'text'"]),
    ("a.jsonl", b'{"text": "ok"}\n{"text": 5}\n', {}, ["line 2", "not a string"]),
    ("a.jsonl", b'{"text": "ok"}\n', {"field": "completion"}, ["line 1", "'completion'"]),
    ("a.csv", b"id,body\n1,x\n", {}, ["no column 'text'", "id, body"]),
    ("a.txt", b"caf\xe9\n", {}, ["UTF-8", "line 1"]),
    ("a.txt", b"ok\nnul \x00 here\n", {}, ["line 2", "NUL"]),
    ("a.pdf", b"%PDF", {}, ["format", ".jsonl"]),
    ("a.txt", b"x\n", {"format": "xml"}, ["unknown format"]),
    ("a.jsonl.gz", b"not gzip at all", {}, ["not valid gzip"]),
], ids=["bad-json-line", "missing-field", "field-not-string", "other-field", "csv-no-column",
        "not-utf8", "nul", "unknown-extension", "unknown-format", "bad-gzip"])
def test_unreadable_upload_is_422(client, admin_headers, filename, data, form, words):
    before = stored_state()
    r = client.post(REFS, files={"file": (filename, data)}, data=form, headers=admin_headers)
    assert_problem(r, 422, *words)
    assert stored_state() == before


def test_upload_with_a_bad_description_is_422(client, admin_headers, reference_documents):
    before = stored_state()
    r = client.post(REFS, files={"file": ("a.txt", "\n".join(reference_documents).encode())},
                    data={"description": "nul \x00 here"}, headers=admin_headers)
    assert_problem(r, 422, "description", "NUL")
    assert stored_state() == before


def test_upload_without_a_file_is_422(client, admin_headers):
    before = stored_state()
    r = client.post(REFS, data={"name": "x"}, files={"other": ("a.txt", b"x")},
                    headers=admin_headers)
    assert_problem(r, 422, "file")
    assert stored_state() == before


@pytest.mark.parametrize(("body", "words"), [
    (b'{"name": "x", "documents": ["a", ', ["malformed JSON"]),
    (b'{"documents": ["a"]}', ["name", "required"]),
    (b'{"name": "x"}', ["documents", "required"]),
    (b'{"name": "x", "documents": "not a list"}', ["documents"]),
    (b'{"name": "x", "documents": [1, 2]}', ["documents.0"]),
    (b'{"name": "", "documents": ["a"]}', ["name"]),
    (b'{"name": "x", "documents": ["a\\u0000"]}', ["documents.0", "NUL"]),
    (b'{"name": "x", "documents": ["a"], "version": 3}', ["version"]),
], ids=["truncated", "no-name", "no-documents", "documents-not-list", "not-strings",
        "empty-name", "nul", "version-is-not-settable"])
def test_invalid_json_body_is_422(client, admin_headers, body, words):
    before = stored_state()
    r = client.post(REFS, content=body,
                    headers={**admin_headers, "content-type": "application/json"})
    assert_problem(r, 422, *words)
    assert stored_state() == before


def test_invalid_utf8_json_body_is_rejected(client, admin_headers):
    before = stored_state()
    r = client.post(REFS, content=b'{"name": "x", "documents": ["caf\xe9"]}',
                    headers={**admin_headers, "content-type": "application/json"})
    assert r.status_code in (400, 422)
    assert "utf-8" in assert_problem(r, r.status_code)["detail"].lower()
    assert stored_state() == before


def test_other_content_types_are_415(client, admin_headers):
    r = client.post(REFS, content=b"a\nb\n",
                    headers={**admin_headers, "content-type": "text/plain"})
    assert_problem(r, 415, "multipart/form-data")


def test_references_are_immutable(client, admin_headers, reference_documents):
    ref = client.post(REFS, json={"name": "r", "documents": reference_documents},
                      headers=admin_headers).json()
    before = stored_state()
    for method in ("put", "patch"):
        r = client.request(method, f"{REFS}/{ref['id']}", json={"name": "changed"},
                           headers=admin_headers)
        assert_problem(r, 405)
    assert stored_state() == before
    # it can only go as a whole, once nothing uses it (tests/service/test_retention.py)


def test_unknown_reference_is_404(client):
    assert_problem(client.get(f"{REFS}/424242"), 404, "424242")
    # an id that cannot exist names nothing: 404 like any unknown id
    assert_problem(client.get(f"{REFS}/{2**70}"), 404, "reference_id")
    assert_problem(client.get(f"{REFS}/not-a-number"), 404, "reference_id")


def test_reference_writes_need_an_admin_key(client, make_key, reference_documents):
    ingest = {"Authorization": f"Bearer {make_key('ingest')}"}
    scoped_admin = {"Authorization": f"Bearer {make_key('admin', 'bot')}"}
    before = stored_state()
    body = {"name": "r", "documents": reference_documents}
    assert_problem(client.post(REFS, json=body), 401, "admin")
    assert_problem(client.post(REFS, json=body, headers=ingest), 403, "admin")
    assert_problem(client.post(REFS, json=body, headers=scoped_admin), 403, "scoped to model")
    assert stored_state() == before
