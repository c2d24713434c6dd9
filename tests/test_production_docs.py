"""README's production instructions work as written: every setting is documented, and the
"Production without Docker" commands start a stack (PostgreSQL + Redis from
scripts/servers.sh) that scores a window."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from contextlib import ExitStack

import httpx
import pytest

from tests.conftest import need
from tests.support import REPO, VENV_BIN, free_port, process, wait_http

README = (REPO / "README.md").read_text()


def _production_block() -> list[str]:
    block = README.split("<!-- production-start -->", 1)[1].split("<!-- production-end -->")[0]
    return [line.strip() for line in block.splitlines()
            if line.strip() and not line.startswith("```")]


def test_every_setting_is_documented_in_the_configuration_table():
    from service.settings import Settings

    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    missing = [name.upper() for name in Settings.model_fields
               if name.upper() not in documented]
    assert not missing, f"settings missing from README's Configuration table: {missing}"


def test_the_production_block_is_migrate_then_api_worker_beat():
    commands = [line.split()[1] for line in _production_block()
                if line.startswith("collapsewatch ")]
    assert commands == ["migrate", "api", "worker", "beat"]
    exports = [line for line in _production_block() if line.startswith("export ")]
    assert {e.split("=", 1)[0].removeprefix("export ") for e in exports} == {
        "COLLAPSEWATCH_DATABASE_URL", "COLLAPSEWATCH_BROKER_URL"}
    assert any("[postgres,redis]" in line for line in _production_block())


@pytest.mark.slow
def test_the_production_commands_start_a_stack_that_scores_a_window(
        postgres_url, redis_url, tmp_path, human_documents):
    need("PostgreSQL", postgres_url)
    env = {**os.environ, "COLLAPSEWATCH_DATA_DIR": str(tmp_path / "data"),
           "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    port = free_port()
    commands: list[list[str]] = []
    for line in _production_block():
        if line.startswith("pip "):
            continue  # installed already: the test runs from the project's environment
        if line.startswith("export "):
            name = line.removeprefix("export ").split("=", 1)[0]
            env[name] = postgres_url if name.endswith("DATABASE_URL") else redis_url
            continue
        argv = shlex.split(line)
        # only what cannot be the same here: a free port and a writable schedule path
        argv = [str(port) if a == "8000" else a for a in argv]
        argv = [str(tmp_path / "celerybeat-schedule") if a.startswith("/var/lib/") else a
                for a in argv]
        commands.append(argv)
    migrate, api, worker, beat = commands
    done = subprocess.run(migrate, env=env, capture_output=True, text=True, timeout=300,
                          cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    key = subprocess.run(["collapsewatch", "keys", "create", "--scope", "admin"], env=env,
                         capture_output=True, text=True, timeout=120, cwd=REPO,
                         check=True).stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    base = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        api_proc = stack.enter_context(process(api, tmp_path / "api.log", env=env))
        stack.enter_context(process(worker, tmp_path / "worker.log", env=env))
        stack.enter_context(process(beat, tmp_path / "beat.log", env=env))
        wait_http(f"{base}/readyz", timeout=120, proc=api_proc.popen)
        with httpx.Client(base_url=f"{base}/api/v1", headers=headers, timeout=120) as c:
            ref = c.post("/references", json={"name": "fortunes",
                                              "documents": human_documents[:300]})
            assert ref.status_code == 201, ref.text
            r = c.post("/models", json={"name": "bot", "reference_id": ref.json()["id"],
                                        "window": {"size": 60, "min_size": 10},
                                        "auto_baseline_windows": 0})
            assert r.status_code == 201, r.text
            samples = [{"id": str(i), "text": t}
                       for i, t in enumerate(human_documents[6000:6060])]
            assert c.post("/models/bot/samples", json={"samples": samples}).status_code == 202
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                evaluations = c.get("/models/bot/evaluations").json()["evaluations"]
                if evaluations:
                    break
                time.sleep(1)
            logs = "\n".join((tmp_path / f"{n}.log").read_text(errors="replace")[-2000:]
                             for n in ("api", "worker", "beat"))
            assert evaluations, f"no window scored within 300 s\n{logs}"
            assert evaluations[0]["documents"] == 60
            assert evaluations[0]["health"] in ("healthy", "early_collapse", "collapse")
