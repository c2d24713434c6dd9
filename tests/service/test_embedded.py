"""Embedded mode: `collapsewatch serve` runs API, Celery worker and beat on SQLite and the
embedded broker; samples posted over REST come back as evaluations over REST."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.service.pipeline_fixtures import WINDOW, cli, wait_until
from tests.support import Proc, free_port, process, wait_http

pytestmark = pytest.mark.slow


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    # empty URLs: the embedded defaults under the data directory are used
    return {"COLLAPSEWATCH_DATA_DIR": str(tmp_path / "data"),
            "COLLAPSEWATCH_DATABASE_URL": "", "COLLAPSEWATCH_BROKER_URL": "",
            "COLLAPSEWATCH_PLAN_INTERVAL_SECONDS": "0.5", "COLLAPSEWATCH_LOG_JSON": "1"}


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _children_started(log_path: Path) -> bool:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return text.count('"event": "started"') >= 2 and "ready." in text


def test_serve_scores_posted_samples_and_stops_on_ctrl_c(tmp_path, human_documents):
    env = _embedded_env(tmp_path)
    admin = cli("keys", "create", "--scope", "admin", env=env).strip()
    auth = {"Authorization": f"Bearer {admin}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with process(["collapsewatch", "serve", "--port", str(port)], log_path, env=env) as serve:
        wait_http(f"{base}/healthz", timeout=90, proc=serve.popen)
        with httpx.Client(base_url=base, timeout=120) as http:
            ref = http.post("/api/v1/references", headers=auth,
                            json={"name": "fortunes", "documents": human_documents[:300]})
            assert ref.status_code == 201, ref.text
            model = http.post("/api/v1/models", headers=auth, json={
                "name": "bot", "reference_id": ref.json()["id"],
                "window": {"size": WINDOW, "min_size": 10}})
            assert model.status_code == 201, model.text
            ingest = {"Authorization": f"Bearer {cli('keys', 'create', '--scope', 'ingest', env=env).strip()}"}
            docs = human_documents[8000:8000 + WINDOW + 7]
            r = http.post("/api/v1/models/bot/samples", headers=ingest, json={
                "samples": [{"id": str(i), "text": d} for i, d in enumerate(docs)]})
            assert r.status_code == 202, r.text

            def scored():
                got = http.get("/api/v1/models/bot/evaluations").json()["evaluations"]
                return got or None

            (evaluation,) = wait_until(scored, 180, "the window's evaluation over REST",
                                       on_timeout=serve.log)
            assert evaluation["documents"] == WINDOW and evaluation["sample_count"] == WINDOW
            assert evaluation["health"] in ("healthy", "early_collapse", "collapse",
                                            "insufficient_data")
            assert set(evaluation["signals"]) == {"diversity", "tail_coverage", "sameness"}
            health = http.get("/api/v1/models/bot/health").json()
            assert health["id"] == evaluation["id"]
            assert health["health"] == evaluation["health"]

        # the new reference's band grid was computed by the worker (its 120-document
        # calibration pool serves the 50- and 100-document sizes only)
        def grid_logged():
            for line in log_path.read_text(errors="replace").splitlines():
                if '"reference bands computed"' in line:
                    return line
            return None

        line = wait_until(grid_logged, 120, "the reference's band grid", on_timeout=serve.log)
        assert '"bands": [[50, ' in line and '], [100, ' in line, line
        assert '[200, ' not in line, line
        assert (tmp_path / "data" / "broker.db").exists()  # the embedded broker file
        # Ctrl-C in a terminal: SIGINT to the whole foreground process group
        os.killpg(serve.popen.pid, signal.SIGINT)
        assert serve.popen.wait(60) == 0
        wait_until(lambda: _group_gone(serve.popen.pid), 30, "worker and beat to exit",
                   on_timeout=serve.log)
    assert "Traceback" not in log_path.read_text(errors="replace")


@contextmanager
def _serve_with_children(tmp_path: Path) -> Iterator[Proc]:
    """`collapsewatch serve` (embedded defaults), up and with its worker and beat started."""
    log_path = tmp_path / "serve.log"
    port = free_port()
    with process(["collapsewatch", "serve", "--port", str(port)], log_path,
                 env=_embedded_env(tmp_path)) as serve:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=serve.popen)
        wait_until(lambda: _children_started(log_path), 60, "worker and beat to start",
                   on_timeout=serve.log)
        yield serve


def test_sigterm_to_serve_stops_worker_and_beat(tmp_path):
    log_path = tmp_path / "serve.log"
    with _serve_with_children(tmp_path) as serve:
        time.sleep(1)
        serve.popen.send_signal(signal.SIGTERM)  # only `serve` itself, as systemd would
        assert serve.popen.wait(60) == 0
        wait_until(lambda: _group_gone(serve.popen.pid), 30, "worker and beat to exit",
                   on_timeout=serve.log)
    assert '"worker and beat stopped"' in log_path.read_text(errors="replace")


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) from /proc/<pid>/stat (this machine is Linux), None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _state_and_parent(int(entry.name))
            if info is not None and info[1] == pid:
                found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    # a zombie still has its /proc entry until it is reaped; it has stopped all the same
    info = _state_and_parent(pid)
    return info is None or info[0] == "Z"


def test_worker_and_beat_stop_when_serve_is_killed_with_sigkill(tmp_path):
    log_path = tmp_path / "serve.log"
    with _serve_with_children(tmp_path) as serve:
        children = _children_of(serve.popen.pid)
        assert len(children) == 2, children
        serve.popen.kill()  # SIGKILL to `serve` only: it cannot stop its children itself
        serve.popen.wait(10)
        wait_until(lambda: all(_gone(pid) for pid in children), 30,
                   "worker and beat to notice that serve is gone", on_timeout=serve.log)
    assert "collapsewatch serve is gone; stopping" in log_path.read_text(errors="replace")
