"""API keys and who may do what: scopes, keys limited to one model, expiry, revocation,
last use, rate limits; reads open on loopback unless configured."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from service.domain.errors import Unauthorized
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
    from service.domain.errors import Invalid
    from service.domain.keys import create_key

    with session_scope() as s:
        keys = {create_key(s, "read") for _ in range(20)}
        with pytest.raises(Invalid, match="unknown scope"):
            create_key(s, "root")
    assert len(keys) == 20


@pytest.mark.parametrize(("scope", "key_model", "action", "model", "allowed"), [
    ("admin", None, "admin", "m", True),
    ("admin", None, "ingest", "m", True),
    ("ingest", None, "ingest", "m", True),
    ("ingest", None, "admin", None, False),
    ("ingest", "m", "ingest", "m", True),
    ("ingest", "m", "ingest", "other", False),
    ("ingest", "m", "read", "other", False),
    ("ingest", "m", "read", None, True),
    ("read", None, "ingest", "m", False),
    ("read", None, "read", "m", True),
    ("read", None, "operator", "m", False),
    ("ingest", None, "operator", "m", False),
    ("operator", None, "operator", "m", True),
    ("operator", None, "read", "m", True),
    ("operator", None, "ingest", "m", False),
    ("operator", None, "admin", None, False),
    ("operator", "m", "operator", "other", False),
    ("admin", None, "operator", "m", True),
    ("admin", "m", "admin", "m", True),
    ("admin", "m", "admin", "other", False),
    ("admin", "m", "admin", None, False),
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
    for scope in ("read", "ingest", "operator", "admin"):
        r = client.get(path, headers={"Authorization": f"Bearer {make_key(scope)}"})
        assert r.status_code == 200, (scope, r.text)
    # a key limited to another model reads shared things, not the model
    other = make_key("ingest", "other-model")
    r = client.get(path, headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == (404 if path == "/api/v1/models/bot" else 200), r.text


def test_probes_and_docs_stay_open_when_reads_need_a_key(read_key_required):
    client = read_key_required
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(("scope", "expected"), [
    (None, (401, 401, 401)),
    ("read", (403, 403, 403)),
    ("ingest", (403, 403, 202)),
    ("operator", (403, 403, 403)),
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


# ----------------------------------------------------------------------- least privilege

def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _fire(model_id: int) -> None:
    from service.domain import alerts as engine
    from service.domain.db import session_scope
    from tests.service.alert_fixtures import add_evaluation

    for _ in range(2):
        add_evaluation(model_id, "collapse")
    with session_scope() as s:
        engine.evaluate_model(s, model_id)


@pytest.fixture
def two_firing_models(client, database_url) -> dict[str, int]:
    """Models bot and other, each with firing alerts; returns one alert id per model."""
    from tests.service.alert_fixtures import make_model

    ids = {}
    for name in ("bot", "other"):
        _fire(make_model(name))
        alerts = client.get("/api/v1/alerts", params={"model": name}).json()["alerts"]
        ids[name] = alerts[0]["id"]
    return ids


@pytest.mark.parametrize(("scope", "status"), [
    ("read", 403), ("ingest", 403), ("operator", 200), ("admin", 200)])
def test_acknowledging_needs_an_operator_or_admin_key(client, make_key, two_firing_models,
                                                      scope, status):
    alert_id = two_firing_models["bot"]
    r = client.post(f"/api/v1/alerts/{alert_id}/ack", headers=_bearer(make_key(scope)))
    assert r.status_code == status, r.text
    acknowledged = client.get(f"/api/v1/alerts/{alert_id}").json()["acknowledged_at"]
    assert (acknowledged is not None) is (status == 200)


def test_an_operator_key_changes_nothing_else(client, make_key, two_firing_models,
                                              stored_reference, reference_documents):
    headers = _bearer(make_key("operator"))
    before = stored_state()
    assert client.post("/api/v1/models/bot/samples", json={"samples": samples(1)},
                       headers=headers).status_code == 403
    assert client.patch("/api/v1/models/bot", json={"description": "x"},
                        headers=headers).status_code == 403
    assert client.patch("/api/v1/models/bot/alert-rules/collapse", json={"enabled": False},
                        headers=headers).status_code == 403
    assert client.post("/api/v1/channels", headers=headers, json={
        "name": "x", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
    ).status_code == 403
    assert client.get("/api/v1/keys", headers=headers).status_code == 403
    assert stored_state() == before


def test_a_key_limited_to_a_model_reads_only_that_model(client, make_key, two_firing_models):
    headers = _bearer(make_key("read", "bot"))
    names = [m["name"] for m in client.get("/api/v1/models", headers=headers).json()["models"]]
    assert names == ["bot"]
    assert client.get("/api/v1/models/bot/health", headers=headers).status_code == 200
    for path in ("/api/v1/models/other", "/api/v1/models/other/health",
                 "/api/v1/models/other/evaluations", "/api/v1/models/other/baseline",
                 "/api/v1/models/other/alert-rules",
                 f"/api/v1/alerts/{two_firing_models['other']}"):
        r = client.get(path, headers=headers)
        assert_problem(r, 404)
        # the same answer as for a model that does not exist
        assert "other" not in r.text or "does not exist" in r.text
    alerts = client.get("/api/v1/alerts", headers=headers).json()["alerts"]
    assert alerts and {a["model"] for a in alerts} == {"bot"}
    assert_problem(client.get("/api/v1/alerts", params={"model": "other"}, headers=headers), 404)
    # without a key (reads open on loopback) every model is listed
    assert len(client.get("/api/v1/models").json()["models"]) == 2


def test_a_key_limited_to_a_model_acknowledges_only_its_alerts(client, make_key,
                                                               two_firing_models):
    for scope in ("operator", "admin"):
        headers = _bearer(make_key(scope, "bot"))
        other = two_firing_models["other"]
        assert_problem(client.post(f"/api/v1/alerts/{other}/ack", headers=headers), 404)
        assert client.get(f"/api/v1/alerts/{other}").json()["acknowledged_at"] is None
    r = client.post(f"/api/v1/alerts/{two_firing_models['bot']}/ack", headers=headers)
    assert r.status_code == 200, r.text


def test_a_key_limited_to_a_model_cannot_touch_other_models_or_global_channels(
        client, make_key, admin_headers, two_firing_models, monkeypatch):
    from service.settings import get_settings
    from tests.service.alert_fixtures import make_channel

    # the loopback URLs below are never called; allowed so that only the scope decides
    monkeypatch.setenv("COLLAPSEWATCH_CHANNEL_ALLOWED_HOSTS", "127.0.0.1")
    get_settings.cache_clear()

    everyone = make_channel("everyone", "webhook", {"url": "http://127.0.0.1:9/hook"})
    theirs = make_channel("others", "webhook", {"url": "http://127.0.0.1:9/o"}, models=["other"])
    headers = _bearer(make_key("admin", "bot"))
    before = stored_state()
    hook = {"kind": "webhook", "config": {"url": "http://127.0.0.1:9/b"}}
    assert_problem(client.post("/api/v1/channels", json={"name": "all", **hook},
                               headers=headers), 403, "without --model")
    assert_problem(client.post("/api/v1/channels", json={"name": "o", "models": ["other"], **hook},
                               headers=headers), 403, "other")
    assert_problem(client.post("/api/v1/channels",
                               json={"name": "bo", "models": ["bot", "other"], **hook},
                               headers=headers), 403, "other")
    for channel_id in (everyone, theirs):
        assert_problem(client.get(f"/api/v1/channels/{channel_id}", headers=headers), 404)
        assert_problem(client.delete(f"/api/v1/channels/{channel_id}", headers=headers), 404)
        assert_problem(client.post(f"/api/v1/channels/{channel_id}/retry", headers=headers), 404)
    assert_problem(client.patch("/api/v1/models/other/alert-rules/collapse",
                                json={"enabled": False}, headers=headers), 403)
    assert_problem(client.post("/api/v1/models/other/baseline", json={"documents": ["a"] * 5},
                               headers=headers), 403)
    assert_problem(client.patch("/api/v1/models/other", json={"description": "x"},
                                headers=headers), 403)
    assert stored_state() == before
    listed = client.get("/api/v1/channels", headers=admin_headers).json()["channels"]
    assert {c["name"] for c in listed} == {"everyone", "others"}

    created = client.post("/api/v1/channels", json={"name": "mine", "models": ["bot"], **hook},
                          headers=headers)
    assert created.status_code == 201, created.text
    mine = client.get("/api/v1/channels", headers=headers).json()["channels"]
    assert [c["name"] for c in mine] == ["mine"]
    global_ok = client.post("/api/v1/channels", json={"name": "all", **hook},
                            headers=admin_headers)
    assert global_ok.status_code == 201, global_ok.text


# ----------------------------------------------------------------- expiry, revoke, last use

def _set_key_column(key_id: int, **values) -> None:
    from sqlalchemy import update

    from service.domain.db import session_scope
    from service.domain.tables import ApiKey

    with session_scope() as s:
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))


def test_an_expired_key_is_401(client, service_env, model_name):
    from datetime import timedelta

    from service.domain.db import session_scope
    from service.domain.keys import issue_key

    with session_scope() as s:
        row, key = issue_key(s, "ingest", "bot", expires_at=datetime.now(UTC)
                             + timedelta(hours=1))
        key_id = row.id
    ok = client.post("/api/v1/models/bot/samples", json={"samples": samples(1)},
                     headers=_bearer(key))
    assert ok.status_code == 202, ok.text
    _set_key_column(key_id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    before = stored_state()
    r = client.post("/api/v1/models/bot/samples", json={"samples": samples(1, 1)},
                    headers=_bearer(key))
    assert_problem(r, 401, "expired")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_problem(client.get("/api/v1/models", headers=_bearer(key)), 401, "expired")
    assert stored_state() == before


def test_last_used_is_written_at_most_once_a_minute(client, service_env, model_name):
    from datetime import timedelta

    from service.domain.db import session_scope
    from service.domain.keys import issue_key

    with session_scope() as s:
        row, key = issue_key(s, "read")
        key_id = row.id
    (fresh,) = [r for r in _key_rows() if r.id == key_id]
    assert fresh.last_used_at is None
    assert client.get("/api/v1/models", headers=_bearer(key)).status_code == 200
    (first,) = [r.last_used_at for r in _key_rows() if r.id == key_id]
    assert first is not None
    for _ in range(5):
        assert client.get("/api/v1/models", headers=_bearer(key)).status_code == 200
    assert [r.last_used_at for r in _key_rows() if r.id == key_id] == [first]
    # a minute later the next request writes it again
    _set_key_column(key_id, last_used_at=datetime.now(UTC) - timedelta(seconds=61))
    assert client.get("/api/v1/models", headers=_bearer(key)).status_code == 200
    (later,) = [r.last_used_at for r in _key_rows() if r.id == key_id]
    assert later.replace(tzinfo=None) > first.replace(tzinfo=None)


# ------------------------------------------------------------------------------- /api/v1/keys

def test_keys_api_lists_creates_and_revokes_for_unlimited_admins(client, admin_headers,
                                                                 make_key, model_name):
    created = []
    for i in range(5):
        r = client.post("/api/v1/keys", headers=admin_headers, json={
            "scope": "operator", "model": "bot", "description": f"pager {i}",
            "expires_in": "30d"})
        assert r.status_code == 201, r.text
        created.append(r.json())
    body = created[0]
    assert body["key"].startswith("cw_") and body["active"] is True
    assert (body["scope"], body["model"], body["description"]) == ("operator", "bot", "pager 0")
    expires = datetime.fromisoformat(body["expires_at"])
    assert 29.9 < (expires - datetime.now(UTC)).total_seconds() / 86400 < 30.1

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/keys", params=params, headers=admin_headers)
        assert page.status_code == 200, page.text
        seen += page.json()["keys"]
        cursor, pages = page.json()["next_cursor"], pages + 1
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 6  # the admin key itself and five new ones
    assert len({k["id"] for k in seen}) == 6
    listing = str(seen)
    rows = _key_rows()
    for row in rows:
        assert row.key_hash not in listing and row.prefix not in listing
    assert all(c["key"] not in listing for c in created)
    assert all("key" not in k for k in seen)

    # the new key works, until revoked (DELETE or POST .../revoke)
    new_key = created[1]["key"]
    assert client.post("/api/v1/alerts/999/ack", headers=_bearer(new_key)).status_code == 404
    r = client.delete(f"/api/v1/keys/{created[1]['id']}", headers=admin_headers)
    assert r.status_code == 200 and r.json()["revoked_at"] and r.json()["active"] is False
    assert_problem(client.get("/api/v1/models", headers=_bearer(new_key)), 401, "revoked")
    again = client.post(f"/api/v1/keys/{created[1]['id']}/revoke", headers=admin_headers)
    assert again.json()["revoked_at"] == r.json()["revoked_at"]  # idempotent
    assert client.get(f"/api/v1/keys/{created[1]['id']}",
                      headers=admin_headers).json()["active"] is False


@pytest.mark.parametrize(("who", "status"), [
    (None, 401), ("read", 403), ("operator", 403), ("ingest", 403), ("admin:bot", 403)])
def test_keys_api_refuses_everyone_but_unlimited_admins(client, make_key, model_name, who,
                                                        status):
    headers = {}
    if who is not None:
        scope, _, model = who.partition(":")
        headers = _bearer(make_key(scope, model or None))
    before = stored_state()
    assert_problem(client.get("/api/v1/keys", headers=headers), status)
    assert_problem(client.post("/api/v1/keys", json={"scope": "admin"}, headers=headers), status)
    assert_problem(client.delete("/api/v1/keys/1", headers=headers), status)
    assert stored_state() == before
    assert all(r.revoked_at is None for r in _key_rows())


@pytest.mark.parametrize(("method", "path", "body", "status", "word"), [
    ("post", "/api/v1/keys", {"scope": "root"}, 422, "scope"),
    ("post", "/api/v1/keys", {"scope": "read", "expires_in": "soon"}, 422, "duration"),
    ("post", "/api/v1/keys", {"scope": "read", "expires_in": "0d"}, 422, "duration"),
    ("post", "/api/v1/keys", {"scope": "read", "key": "cw_chosen"}, 422, "key"),
    ("get", "/api/v1/keys?cursor=abc", None, 422, "cursor"),
    ("get", "/api/v1/keys?limit=0", None, 422, "limit"),
    ("delete", "/api/v1/keys/99999", None, 404, "99999"),
    ("delete", "/api/v1/keys/99999999999999999999", None, 404, "key_id"),
])
def test_keys_api_bad_input(client, admin_headers, method, path, body, status, word):
    before = stored_state()
    kwargs = {"json": body} if body is not None else {}
    r = getattr(client, method)(path, headers=admin_headers, **kwargs)
    assert_problem(r, status, word)
    assert stored_state() == before


# ----------------------------------------------------------------------------- rate limits

def test_rate_limit_per_key_is_429_with_retry_after(monkeypatch, make_key, model_name):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_RATE_LIMIT_PER_KEY", "0.5")
    monkeypatch.setenv("COLLAPSEWATCH_RATE_LIMIT_BURST", "3")
    monkeypatch.setenv("COLLAPSEWATCH_PLAN_ON_INGEST", "0")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        _rate_limited(client, make_key)


def _rate_limited(client, make_key) -> None:
    key, other = make_key("ingest", "bot"), make_key("read")
    codes = [client.post("/api/v1/models/bot/samples", json={"samples": samples(1, i)},
                         headers=_bearer(key)).status_code for i in range(3)]
    assert codes == [202, 202, 202]
    before = stored_state()
    r = client.post("/api/v1/models/bot/samples", json={"samples": samples(1, 50)},
                    headers=_bearer(key))
    assert_problem(r, 429, "rate limit")
    assert 1 <= int(r.headers["retry-after"]) <= 2
    assert stored_state() == before
    # per key: another key and keyless reads are not limited by it
    assert client.get("/api/v1/models", headers=_bearer(other)).status_code == 200
    assert client.get("/api/v1/models").status_code == 200


def test_token_bucket_refills_at_the_configured_rate():
    from service.api.security import TokenBuckets
    from service.domain.errors import RateLimited

    buckets = TokenBuckets(rate=50, burst=100)
    for _ in range(100):
        buckets.take(1, now=0.0)
    with pytest.raises(RateLimited) as exc:
        buckets.take(1, now=0.0)
    assert exc.value.retry_after == pytest.approx(1 / 50)
    buckets.take(2, now=0.0)  # another key has its own bucket
    for _ in range(50):  # one second refills fifty
        buckets.take(1, now=1.0)
    with pytest.raises(RateLimited):
        buckets.take(1, now=1.0)
    TokenBuckets(rate=0, burst=0).take(1)  # 0 disables the limit


# -------------------------------------------------------------------------------- migration

@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_key_columns_migration_keeps_the_keys_of_a_filled_database(backend, tmp_path,
                                                                  monkeypatch):
    """A database filled at the previous revision upgrades; its keys keep working."""
    import contextlib

    from sqlalchemy import create_engine, text

    from service.domain.db import reset_engines, session_scope
    from service.domain.keys import authenticate, hash_key
    from service.domain.migrate import upgrade
    from service.settings import get_settings
    from tests.conftest import fresh_pg_database

    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'old.db'}"
        else:
            url = stack.enter_context(fresh_pg_database(migrate=False))
        upgrade(url, "0003")
        engine = create_engine(url)
        with engine.begin() as conn:
            for i, scope in enumerate(("admin", "read", "ingest")):
                conn.execute(text(
                    "INSERT INTO api_keys (prefix, key_hash, scope, model_name, description, "
                    "created_at, revoked_at) VALUES (:p, :h, :s, :m, :d, :c, :r)"),
                    {"p": f"cw_old{i}", "h": hash_key(f"cw_old-key-{i}"), "s": scope,
                     "m": "bot" if scope == "ingest" else None, "d": f"old {i}",
                     "c": datetime(2026, 1, 1, tzinfo=UTC),
                     "r": datetime(2026, 2, 1, tzinfo=UTC) if scope == "read" else None})
        engine.dispose()
        upgrade(url)
        monkeypatch.setenv("COLLAPSEWATCH_DATABASE_URL", url)
        get_settings.cache_clear()
        reset_engines()
        try:
            with session_scope() as s:
                admin = authenticate(s, "cw_old-key-0")
                ingest = authenticate(s, "cw_old-key-2")
                with pytest.raises(Unauthorized, match="revoked"):
                    authenticate(s, "cw_old-key-1")
            assert (admin.scope, ingest.scope, ingest.model_name) == ("admin", "ingest", "bot")
            with session_scope() as s:
                rows = s.execute(text("SELECT description, expires_at, last_used_at FROM "
                                      "api_keys ORDER BY id")).all()
            assert [r[0] for r in rows] == ["old 0", "old 1", "old 2"]
            assert [r[1] for r in rows] == [None, None, None]
            assert rows[0][2] is not None and rows[1][2] is None
        finally:
            get_settings.cache_clear()
            reset_engines()
