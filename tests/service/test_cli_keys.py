"""`collapsewatch keys create`: prints a new key once; only its hash is stored."""

from __future__ import annotations

import hashlib
import subprocess

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
