"""/healthz, /readyz, /docs, and the error format shared by every route."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from tests.service.api_fixtures import assert_problem, samples


def test_healthz_answers_ok(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_checks_the_database(client, database_url):
    from service.api.health import head_revision

    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "database": database_url.split(":")[0].split("+")[0],
                        "schema_revision": head_revision()}


@pytest.fixture
def app_client_for(monkeypatch):
    """app_client_for(url): a TestClient for an app whose settings point at ``url``."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.domain.db import reset_engines
    from service.settings import get_settings

    def _make(url: str) -> TestClient:
        monkeypatch.setenv("COLLAPSEWATCH_DATABASE_URL", url)
        get_settings.cache_clear()
        reset_engines()
        return TestClient(create_app())

    yield _make
    get_settings.cache_clear()
    reset_engines()


def test_readyz_is_503_before_migrations(app_client_for, tmp_path):
    with app_client_for(f"sqlite:///{tmp_path / 'empty.db'}") as c:
        assert_problem(c.get("/readyz"), 503, "collapsewatch migrate")
        assert c.get("/healthz").status_code == 200


def test_readyz_is_503_when_the_database_is_down(app_client_for):
    from tests.support import free_port

    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    with app_client_for(url) as c:
        body = assert_problem(c.get("/readyz"), 503, "database unavailable")
    assert "nobody" not in body["detail"]  # no connection details leak


def test_docs_and_openapi_describe_the_api(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [("/api/v1/references", "post"), ("/api/v1/references", "get"),
                         ("/api/v1/references/{reference_id}", "get"),
                         ("/api/v1/models", "post"), ("/api/v1/models/{name}", "patch"),
                         ("/api/v1/models/{name}/samples", "post"), ("/readyz", "get")]:
        assert method in paths[path], (path, method)
    ingest = paths["/api/v1/models/{name}/samples"]["post"]
    assert "202" in ingest["responses"]
    ref_body = paths["/api/v1/references"]["post"]["requestBody"]["content"]
    assert set(ref_body) == {"application/json", "multipart/form-data"}
    assert "SampleBatch" in spec["components"]["schemas"]


def test_unknown_route_is_a_problem(client):
    assert_problem(client.get("/api/v1/nothing-here"), 404)


def test_internal_errors_are_problems_without_a_stack_trace(client, ingest_headers,
                                                            database_url):
    from fastapi.testclient import TestClient

    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE samples"))
    engine.dispose()
    # the app answers; the test client would otherwise re-raise the server's exception
    raw = TestClient(client.app, raise_server_exceptions=False)
    r = raw.post("/api/v1/models/bot/samples", json={"samples": samples(2)},
                    headers=ingest_headers)
    body = assert_problem(r, 500, "internal error")
    assert "samples" not in body["detail"] and "sql" not in r.text.lower()
