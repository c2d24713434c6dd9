"""`collapsewatch keys create|list|revoke`: a key is printed once, only its hash is stored;
listing never shows it; a revoke is refused at once by a running API process."""

from __future__ import annotations

import hashlib
import subprocess

import pytest
from sqlalchemy import select

from tests.service.api_fixtures import samples
from tests.support import REPO, VENV_BIN


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([str(VENV_BIN / "collapsewatch"), *args], check=False, capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=REPO, timeout=120)


def test_keys_create_prints_a_key_and_stores_its_hash(service_env, client, model_name):
    from service.domain.db import session_scope
    from service.domain.tables import ApiKey

    done = _cli("keys", "create", "--scope", "ingest", "--model", "bot", env=service_env)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("cw_") and len(key.splitlines()) == 1 and len(key) > 40
    with session_scope() as s:
        rows = s.scalars(select(ApiKey)).all()
    row = next(r for r in rows if r.scope == "ingest")
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert row.model_name == "bot"
    assert all(key not in str(v) for r in rows for v in vars(r).values())

    # the printed key works, for its model only
    headers = {"Authorization": f"Bearer {key}"}
    ok = client.post("/api/v1/models/bot/samples", json={"samples": samples(3)}, headers=headers)
    assert ok.status_code == 202 and ok.json()["accepted"] == 3
    denied = client.post("/api/v1/models", json={"name": "x", "reference_id": 1}, headers=headers)
    assert denied.status_code == 403


def test_each_call_prints_a_new_key(service_env):
    keys = {_cli("keys", "create", "--scope", "admin", env=service_env).stdout.strip()
            for _ in range(2)}
    assert len(keys) == 2


def test_keys_create_with_an_unknown_scope_exits_2(service_env):
    from service.domain.db import session_scope
    from service.domain.tables import ApiKey

    done = _cli("keys", "create", "--scope", "root", env=service_env)
    assert done.returncode == 2
    assert "root" in done.stderr and done.stdout == ""
    with session_scope() as s:
        assert s.scalars(select(ApiKey)).all() == []


def _create(env, *args: str) -> str:
    done = _cli("keys", "create", *args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_keys_list_shows_everything_but_the_key(service_env):
    import json
    from datetime import UTC, datetime

    from service.domain.db import session_scope
    from service.domain.tables import ApiKey

    admin = _create(service_env, "--scope", "admin", "--description", "ops laptop")
    operator = _create(service_env, "--scope", "operator", "--model", "bot",
                       "--expires-in", "30d", "--description", "pager bot")
    done = _cli("keys", "list", "--format", "json", env=service_env)
    assert done.returncode == 0, done.stderr
    keys = json.loads(done.stdout)["keys"]
    assert [(k["scope"], k["model"], k["description"]) for k in keys] == [
        ("admin", None, "ops laptop"), ("operator", "bot", "pager bot")]
    assert set(keys[0]) == {"id", "scope", "model", "description", "created_at",
                            "last_used_at", "expires_at", "revoked_at", "active"}
    assert keys[0]["expires_at"] is None and keys[0]["revoked_at"] is None
    days = (datetime.fromisoformat(keys[1]["expires_at"]) - datetime.now(UTC)).days
    assert days in (29, 30)
    table = _cli("keys", "list", env=service_env)
    assert table.returncode == 0 and "pager bot" in table.stdout and "EXPIRES" in table.stdout
    with session_scope() as s:
        secrets = [v for r in s.scalars(select(ApiKey)) for v in (r.key_hash, r.prefix)]
    for output in (done.stdout, table.stdout):
        assert admin not in output and operator not in output
        assert not any(secret in output for secret in secrets)


@pytest.mark.parametrize("args", [("--expires-in", "forever"), ("--expires-in", "0d"),
                                  ("--expires-in=-3d",), ("--scope", "root")])
def test_keys_create_with_bad_input_exits_2_and_stores_nothing(service_env, args):
    from service.domain.db import session_scope
    from service.domain.tables import ApiKey

    base = ["keys", "create"] + ([] if "--scope" in args else ["--scope", "read"])
    done = _cli(*base, *args, env=service_env)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "error" in done.stderr.strip().splitlines()[-1]
    with session_scope() as s:
        assert s.scalars(select(ApiKey)).all() == []


@pytest.mark.parametrize("key_id", ["999", "abc", "0", "99999999999999999999"])
def test_revoking_an_unknown_key_exits_2(service_env, key_id):
    _create(service_env, "--scope", "admin")
    done = _cli("keys", "revoke", key_id, env=service_env)
    assert done.returncode == 2
    assert "key" in done.stderr and done.stdout == ""
    listed = _cli("keys", "list", "--format", "json", env=service_env).stdout
    assert '"revoked_at": null' in listed


def test_a_revoke_is_refused_at_once_by_a_running_api_process(service_env, tmp_path):
    """Keys are looked up on every request: no API process keeps a revoked key alive."""
    import json

    import httpx

    from tests.support import free_port, process, wait_http

    key = _create(service_env, "--scope", "read")
    key_id = json.loads(_cli("keys", "list", "--format", "json",
                             env=service_env).stdout)["keys"][0]["id"]
    port = free_port()
    args = [str(VENV_BIN / "collapsewatch"), "api", "--host", "0.0.0.0", "--port", str(port),
            "--workers", "2"]
    with process(args, tmp_path / "api.log", env=service_env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", timeout=60, proc=proc.popen)
        headers = {"Authorization": f"Bearer {key}"}
        # reads need a key off loopback, and this one works in every worker process
        assert httpx.get(f"{url}/api/v1/models").status_code == 401
        for _ in range(8):
            assert httpx.get(f"{url}/api/v1/models", headers=headers).status_code == 200
        done = _cli("keys", "revoke", str(key_id), env=service_env)
        assert done.returncode == 0, done.stderr
        assert f"key {key_id}" in done.stdout and "revoked" in done.stdout
        for _ in range(8):  # new connections: spread over both worker processes
            r = httpx.get(f"{url}/api/v1/models", headers=headers)
            assert r.status_code == 401 and "revoked" in r.json()["detail"], r.text
    listed = json.loads(_cli("keys", "list", "--format", "json", env=service_env).stdout)
    (row,) = listed["keys"]
    assert row["revoked_at"] and row["last_used_at"] and row["active"] is False


def test_an_operator_key_from_the_cli_acknowledges_but_cannot_ingest(service_env, client,
                                                                     model_name):
    key = _create(service_env, "--scope", "operator")
    headers = {"Authorization": f"Bearer {key}"}
    r = client.post("/api/v1/models/bot/samples", json={"samples": samples(1)}, headers=headers)
    assert r.status_code == 403
    assert client.post("/api/v1/alerts/12345/ack", headers=headers).status_code == 404
