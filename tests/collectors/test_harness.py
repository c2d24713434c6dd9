"""The API process harness itself: a port taken between choosing it and binding it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.collectors.harness import ApiServer
from tests.support import REPO


def test_a_first_start_moves_off_a_port_another_process_took(service_env, tmp_path):
    api = ApiServer(service_env, tmp_path)
    taken = api.port
    with socket.socket() as other:  # what another test worker's server may do meanwhile
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", taken))
        other.listen()
        api.start()
        try:
            assert api.port != taken
            assert httpx.get(f"{api.url}/healthz", timeout=10).status_code == 200
            assert "address already in use" in (tmp_path / "api.log").read_text()
        finally:
            api.stop()


def _ports_of(worker: str, count: int) -> list[int]:
    """free_port() as an xdist worker of a two-worker run sees it, `count` times in turn."""
    code = (
        "from tests.support import free_port\n"
        f"print(' '.join(str(free_port()) for _ in range({count})))\n"
    )
    env = {**os.environ, "PYTEST_XDIST_WORKER": worker, "PYTEST_XDIST_WORKER_COUNT": "2"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
        check=True, timeout=60,
    )
    return [int(p) for p in out.stdout.split()]


def test_free_ports_stay_out_of_the_ephemeral_range_and_apart_per_worker():
    # bind(0) and every outgoing connection draw from the ephemeral range, so a port from
    # there can be taken by another worker's client before the server binds it
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first, second = _ports_of("gw0", 20), _ports_of("gw1", 20)
    assert all(p < low for p in first + second)
    assert len(set(first)) == 20 and len(set(second)) == 20  # not reused within a run
    assert max(first) < min(second) or max(second) < min(first)  # each worker its own slice
    for port in first[:3]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free when handed out
