"""Helpers shared by the tests: ports, processes, a recording HTTP server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range is 32768-60999


def _worker_ports() -> range | None:
    """This xdist worker's slice of the ports below the ephemeral range (None: too few)."""
    low, high = 10000, _ephemeral_low()  # 10000: above the default ports of the servers here
    if high - low < 1000:
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    index = int(worker[2:]) % workers if worker[2:].isdigit() else 0
    size = (high - low) // workers
    return range(low + index * size, low + (index + 1) * size)


_PORTS = _worker_ports()
# a run's start varies, so two runs in a row do not reuse ports
_next_index = (os.getpid() * 7919) % len(_PORTS) if _PORTS else 0


def free_port() -> int:
    """A loopback port that nothing listens on, for a server a test is about to start.

    The port is closed again before the server binds it, so something else may take it in
    between. A port from bind(("127.0.0.1", 0)) is an ephemeral one: every outgoing connection
    of every test worker (HTTP clients, PostgreSQL, Redis) draws its local port from the same
    range, and so does the other worker's free_port(). Ports are therefore taken below the
    kernel's ephemeral range (which neither bind(0) nor connect() hands out), from a slice of
    it of this xdist worker's own, in turn, so a port is not reused while an earlier server's
    connections on it may linger.
    """
    global _next_index
    if _PORTS is None:  # an unusual range: fall back to the kernel's pick
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for _ in range(len(_PORTS)):
        port = _PORTS[_next_index]
        _next_index = (_next_index + 1) % len(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # something listens there (or has just closed it)
            return port
    raise RuntimeError(f"no free loopback port in {_PORTS.start}-{_PORTS.stop - 1}")


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers 2xx; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code < 300:
                return
        except httpx.HTTPError as exc:  # not up yet
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last})")


@dataclass
class Proc:
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        # children left in the group (their leader died first, or ignored SIGTERM)
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@contextmanager
def process(args: list[str], log_path: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None):
    """Run a real process in its own process group; stop it (and children) at exit."""
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = f"{VENV_BIN}:{full_env.get('PATH', '')}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                 cwd=cwd or REPO, start_new_session=True)
    proc = Proc(popen, log_path)
    try:
        yield proc
    finally:
        proc.stop()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class RecordingServer:
    """A real HTTP server on loopback that records requests and can fail on demand.

    ``fail_next(status, n)`` makes the next n requests answer ``status``;
    ``responder`` may build custom answers (status, headers, body) from a request.
    """

    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    responder: Callable[[Recorded], tuple[int, dict[str, str], bytes]] | None = None
    _fail: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail_next(self, status: int, n: int = 1) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def received(self, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 30) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise TimeoutError(f"expected {count} requests to {path or 'any path'}, "
                           f"got {len(self.received(path))}")

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        rec = Recorded(handler.command, handler.path, dict(handler.headers.items()), body)
        with self._lock:
            fail = self._fail.pop(0) if self._fail else None
            if fail is None:
                self.requests.append(rec)
        if fail is not None:
            status, headers, out = fail, {"content-type": "application/json"}, b'{"error":"injected"}'
        elif self.responder is not None:
            status, headers, out = self.responder(rec)
        else:
            status, headers, out = 200, {"content-type": "application/json"}, b'{"ok":true}'
        handler.send_response(status)
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.send_header("content-length", str(len(out)))
        handler.end_headers()
        handler.wfile.write(out)


@contextmanager
def recording_server(responder=None):
    rec = RecordingServer(responder=responder)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            rec._handle(self)

        do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
