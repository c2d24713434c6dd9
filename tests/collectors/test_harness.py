"""The API process harness itself: a port taken between choosing it and binding it."""

from __future__ import annotations

import socket

import httpx

from tests.collectors.harness import ApiServer


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
