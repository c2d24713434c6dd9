"""API keys and who may do what: writes need a key, reads are open unless configured."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tests.service.api_fixtures import assert_problem, samples, stored_state


def _key_rows():
    from service.domain.db import session_scope
    from service.domain.tables import ApiKey

    with session_scope() as s:
        return s.scalars(select(ApiKey)).all()


def test_only_the_hash_of_a_key_is_stored(service_env):
    from service.domain.db import session_scope
    from service.domain.keys import create_key

    with session_scope() as s:
        key = create_key(s, "ingest", "bot", "ci pipeline")
    (row,) = _key_rows()
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert (row.scope, row.model_name, row.description) == ("ingest", "bot", "ci pipeline")
    stored = [str(v) for v in (row.prefix, row.key_hash, row.scope, row.model_name,
                               row.description)]
    assert all(key not in v for v in stored)
    assert len(row.prefix) < len(key) // 3  # a lookup hint, not the secret


def test_keys_are_unique_and_unknown_scopes_are_refused(service_env):
    from service.domain.db import session_scope
    from service.domain.keys import create_key

    with session_scope() as s:
        keys = {create_key(s, "read") for _ in range(20)}
        with pytest.raises(ValueError, match="unknown scope"):
            create_key(s, "root")
    assert len(keys) == 20


@pytest.mark.parametrize(("scope", "key_model", "action", "model", "allowed"), [
    ("admin", None, "admin", "m", True),
    ("admin", None, "ingest", "m", True),
    ("ingest", None, "ingest", "m", True),
    ("ingest", None, "admin", None, False),
    ("ingest", "m", "ingest", "m", True),
    ("ingest", "m", "ingest", "other", False),
    ("ingest", "m", "read", "other", True),
    ("read", None, "ingest", "m", False),
    ("read", None, "read", "m", True),
])
def test_principal_allows(scope, key_model, action, model, allowed):
    from service.domain.keys import Principal

    assert Principal(1, scope, key_model).allows(action, model) is allowed


def test_revoked_key_is_401(client, make_key, stored_reference):
    from service.domain.db import session_scope
    from service.domain.tables import ApiKey

    key = make_key("admin")
    with session_scope() as s:
        s.scalars(select(ApiKey)).one().revoked_at = datetime.now(UTC)
    before = stored_state()
    r = client.post("/api/v1/models", json={"name": "m", "reference_id": stored_reference},
                    headers={"Authorization": f"Bearer {key}"})
    assert_problem(r, 401, "revoked")
    assert stored_state() == before


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "cw_key"])
def test_malformed_authorization_is_401(client, model_name, header):
    before = stored_state()
    r = client.post("/api/v1/models/bot/samples", json={"samples": samples(1)},
                    headers={"Authorization": header})
    assert_problem(r, 401, "Bearer")
    assert stored_state() == before


READS = ["/api/v1/models", "/api/v1/models/bot", "/api/v1/references",
         "/api/v1/references/1"]


@pytest.mark.parametrize("path", READS)
def test_reads_are_open_by_default(client, model_name, path):
    assert client.get(path).status_code == 200


def test_an_invalid_key_is_refused_even_on_open_reads(client, model_name):
    r = client.get("/api/v1/models", headers={"Authorization": "Bearer cw_wrong"})
    assert_problem(r, 401, "unknown")


@pytest.fixture
def read_key_required(client, monkeypatch, model_name):
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_REQUIRE_READ_KEY", "1")
    get_settings.cache_clear()
    yield client
    get_settings.cache_clear()


@pytest.mark.parametrize("path", READS)
def test_reads_need_a_key_when_configured(read_key_required, make_key, path):
    client = read_key_required
    assert_problem(client.get(path), 401, "read")
    for scope in ("read", "ingest", "admin"):
        r = client.get(path, headers={"Authorization": f"Bearer {make_key(scope)}"})
        assert r.status_code == 200, (scope, r.text)
    # a key scoped to another model may still read
    other = make_key("ingest", "other-model")
    assert client.get(path, headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_probes_and_docs_stay_open_when_reads_need_a_key(read_key_required):
    client = read_key_required
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(("scope", "expected"), [
    (None, (401, 401, 401)),
    ("read", (403, 403, 403)),
    ("ingest", (403, 403, 202)),
    ("admin", (201, 200, 202)),
])
def test_write_scopes(client, make_key, admin_headers, stored_reference, reference_documents,
                      scope, expected):
    """(create reference, patch model, ingest) for each kind of key."""
    client.post("/api/v1/models", json={"name": "bot", "reference_id": stored_reference},
                headers=admin_headers)
    headers = {} if scope is None else {"Authorization": f"Bearer {make_key(scope)}"}
    got = (
        client.post("/api/v1/references", json={"name": "r", "documents": reference_documents},
                    headers=headers).status_code,
        client.patch("/api/v1/models/bot", json={"description": "x"},
                     headers=headers).status_code,
        client.post("/api/v1/models/bot/samples", json={"samples": samples(1)},
                    headers=headers).status_code,
    )
    assert got == expected
