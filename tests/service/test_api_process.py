"""The real `collapsewatch migrate` + `collapsewatch api` processes, spoken to over HTTP."""

from __future__ import annotations

import subprocess
import threading

import httpx
import pytest

from tests.support import REPO, VENV_BIN, free_port, process, wait_http


def _cli(*args: str, env: dict[str, str]) -> str:
    import os

    done = subprocess.run([str(VENV_BIN / "collapsewatch"), *args], check=False, capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def empty_database(request, tmp_path):
    """A database with no tables yet (so `collapsewatch migrate` has work to do)."""
    from tests.conftest import fresh_pg_database

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'api.db'}"
        return
    with fresh_pg_database(migrate=False) as url:
        yield url


@pytest.mark.parametrize("empty_database", ["postgresql", "sqlite"], indirect=True)
def test_api_process_serves_the_whole_ingest_path(empty_database, tmp_path,
                                                  human_documents):
    env = {"COLLAPSEWATCH_DATABASE_URL": empty_database,
           "COLLAPSEWATCH_DATA_DIR": str(tmp_path / "data")}
    assert "up to date" in _cli("migrate", env=env)
    admin = _cli("keys", "create", "--scope", "admin", env=env).strip()
    ingest = _cli("keys", "create", "--scope", "ingest", "--model", "bot", env=env).strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with process(["collapsewatch", "api", "--host", "127.0.0.1", "--port", str(port)],
                 tmp_path / "api.log", env=env) as api:
        wait_http(f"{base}/readyz", timeout=60, proc=api.popen)
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.get("/docs").status_code == 200
            ref = http.post("/api/v1/references",
                            json={"name": "fortunes", "documents": human_documents[:300]},
                            headers={"Authorization": f"Bearer {admin}"})
            assert ref.status_code == 201, ref.text
            model = http.post("/api/v1/models",
                              json={"name": "bot", "reference_id": ref.json()["id"],
                                    "window": {"size": 100, "max_age_seconds": 60,
                                               "min_size": 10}},
                              headers={"Authorization": f"Bearer {admin}"})
            assert model.status_code == 201, model.text

        # four clients at once, overlapping ids: every id stored once, counts add up
        results: list[dict] = []
        errors: list[str] = []

        def post(worker: int) -> None:
            with httpx.Client(base_url=base, timeout=60,
                              headers={"Authorization": f"Bearer {ingest}"}) as http:
                for batch in range(5):
                    start = worker * 150 + batch * 100  # neighbours overlap
                    body = {"samples": [{"id": f"s{i}", "text": human_documents[i]}
                                        for i in range(start, start + 200)]}
                    r = http.post("/api/v1/models/bot/samples", json=body)
                    if r.status_code != 202:
                        errors.append(r.text)
                    else:
                        results.append(r.json())

        threads = [threading.Thread(target=post, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        unique = len({i for w in range(4) for b in range(5)
                      for i in range(w * 150 + b * 100, w * 150 + b * 100 + 200)})
        assert sum(r["accepted"] for r in results) == unique
        assert sum(r["accepted"] + r["duplicates"] for r in results) == 4 * 5 * 200
        shown = httpx.get(f"{base}/api/v1/models/bot").json()
        assert shown["samples_ingested"] == unique
        assert shown["reference"]["sha256"] == ref.json()["sha256"]

        denied = httpx.post(f"{base}/api/v1/models/bot/samples", content=b'{"samples": [',
                            headers={"Authorization": f"Bearer {ingest}",
                                     "content-type": "application/json"})
        assert denied.status_code == 422
        assert denied.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in api.log()
