"""Probed from outside, as an attacker would: a real ``collapsewatch api`` process on loopback,
raw request targets sent byte for byte (what ``curl --path-as-is`` sends), nothing stored
may change and nothing outside the shipped static folder may come back."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.service.api_fixtures import stored_state
from tests.support import REPO, VENV_BIN, free_port, process, wait_http

STATIC_DIR = REPO / "service" / "web" / "static"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_get(port: int, target: str, headers: dict[str, str] | None = None) -> RawResponse:
    """GET with the request target exactly as given (no normalisation, no re-encoding)."""
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), parsed, body)


@dataclass
class ApiProcess:
    port: int
    url: str
    log: callable


@pytest.fixture
def api_process(service_env, tmp_path, request) -> Iterator[ApiProcess]:
    """``collapsewatch api`` on loopback; ``request.param`` (if any) adds environment."""
    extra = dict(getattr(request, "param", None) or {})
    port = free_port()
    host = extra.pop("host", "127.0.0.1")
    args = [str(VENV_BIN / "collapsewatch"), "api", "--host", host, "--port", str(port)]
    env = {**service_env, **extra}
    with process(args, tmp_path / "api.log", env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", timeout=60, proc=proc.popen)
        yield ApiProcess(port, url, proc.log)


def _secrets_in(body: bytes, database_url: str) -> list[str]:
    """Fragments of files outside the static folder that must never come back."""
    found = []
    for marker in (b"root:", b"COLLAPSEWATCH_", b"SQLite format", b"import ", b"[tool."):
        if marker in body:
            found.append(marker.decode())
    if database_url.encode() in body:
        found.append("database url")
    return found


def _outside_targets(service_env: dict[str, str]) -> list[str]:
    db_file = service_env["COLLAPSEWATCH_DATABASE_URL"].removeprefix("sqlite:///")
    return [
        "/static//etc/passwd",
        "/static//proc/self/environ",
        f"/static/{db_file}" if db_file.startswith("/") else "/static//etc/hostname",
        "/static/%2Fetc%2Fhostname",
        "/static/%2fetc%2fpasswd",
        "/static/%2F%2Fetc%2Fpasswd",
        "/static/../settings.py",
        "/static/../../pyproject.toml",
        "/static/..%2fsettings.py",
        "/static/..%2F..%2F..%2Fpyproject.toml",
        "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        "/static/%252e%252e/settings.py",
        "/static/..%5c..%5csettings.py",
        "/static/./../settings.py",
        "/static/app.js/../../settings.py",
        "/static/index.html",
        "/static/",
        "//etc/passwd",
        "/%2Fetc%2Fpasswd",
        "/..%2f..%2fpyproject.toml",
    ]


def test_paths_outside_the_static_folder_are_404_whatever_the_encoding(api_process,
                                                                        service_env):
    before = stored_state()
    leaked = {}
    for target in _outside_targets(service_env):
        r = raw_get(api_process.port, target)
        bad = _secrets_in(r.body, service_env["COLLAPSEWATCH_DATABASE_URL"])
        if r.status != 404 or bad:
            leaked[target] = (r.status, bad, r.body[:80])
    assert leaked == {}
    assert stored_state() == before


def test_a_symlink_inside_the_static_folder_does_not_lead_outside(api_process, service_env):
    link = STATIC_DIR / f"link-{uuid.uuid4().hex}.js"
    os.symlink("/etc/passwd", link)
    try:
        r = raw_get(api_process.port, f"/static/{link.name}")
        assert r.status == 404, r.body[:200]
        assert b"root:" not in r.body
    finally:
        link.unlink()


def test_page_assets_are_served_with_cache_busting_and_the_policy(api_process):
    page = httpx.get(api_process.url + "/")
    assert page.status_code == 200 and "/static/app.js?v=" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset, media in (("app.js", "text/javascript"), ("app.css", "text/css"),
                         ("favicon.svg", "image/svg+xml")):
        versioned = httpx.get(f"{api_process.url}/static/{asset}?v=1")
        assert versioned.status_code == 200 and versioned.content
        assert versioned.headers["content-type"].startswith(media)
        assert "max-age" in versioned.headers["cache-control"]
        assert "default-src 'self'" in versioned.headers["content-security-policy"]
        bare = httpx.get(f"{api_process.url}/static/{asset}")
        assert bare.headers["cache-control"] == "no-cache"
        assert bare.content == (STATIC_DIR / asset).read_bytes()


SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def test_every_response_carries_the_security_headers(api_process):
    for target in ("/", "/static/app.js", "/healthz", "/readyz", "/metrics", "/api/v1/models",
                   "/api/v1/models/ghost", "/static//etc/passwd", "/nope", "/openapi.json"):
        r = raw_get(api_process.port, target)
        got = {k: r.headers.get(k) for k in SECURITY_HEADERS}
        assert got == SECURITY_HEADERS, (target, r.status, got)
        assert "content-security-policy" in r.headers, target


def test_no_cors_unless_origins_are_configured(client, monkeypatch):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import get_settings

    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/api/v1/models", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/api/v1/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers

    monkeypatch.setenv("COLLAPSEWATCH_CORS_ORIGINS", "https://ops.example,https://b.example")
    get_settings.cache_clear()
    with TestClient(create_app()) as cors_client:
        ok = cors_client.get("/api/v1/models", headers={"Origin": "https://ops.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ops.example"
        evil = cors_client.get("/api/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
        pre = cors_client.options("/api/v1/models", headers={
            "Origin": "https://b.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://b.example"


# ---------------------------------------------------------------- reads private off loopback

OFF_LOOPBACK = {"host": "0.0.0.0"}


@pytest.mark.parametrize("api_process", [OFF_LOOPBACK], indirect=True)
def test_off_loopback_reads_need_a_key_but_probes_and_metrics_do_not(api_process, make_key):
    for path in ("/api/v1/models", "/api/v1/references", "/api/v1/alerts"):
        r = httpx.get(api_process.url + path)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["www-authenticate"] == "Bearer"
    for path in ("/healthz", "/readyz", "/metrics", "/", "/static/app.js"):
        assert httpx.get(api_process.url + path).status_code == 200, path
    for scope in ("read", "ingest", "operator", "admin"):
        r = httpx.get(api_process.url + "/api/v1/models",
                      headers={"Authorization": f"Bearer {make_key(scope)}"})
        assert r.status_code == 200, (scope, r.text)


@pytest.mark.parametrize("api_process", [{**OFF_LOOPBACK, "COLLAPSEWATCH_PUBLIC_READS": "1"}],
                         indirect=True)
def test_public_reads_opt_out(api_process):
    assert httpx.get(api_process.url + "/api/v1/models").status_code == 200


def test_loopback_reads_stay_open(api_process):
    assert httpx.get(api_process.url + "/api/v1/models").status_code == 200


@pytest.mark.parametrize("api_process", [{**OFF_LOOPBACK,
                                          "COLLAPSEWATCH_METRICS_TOKEN": "scrape-secret-1"}],
                         indirect=True)
def test_metrics_token_guards_metrics(api_process, make_key):
    url = api_process.url + "/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = httpx.get(url, headers={"Authorization": "Bearer scrape-secret-1"})
    assert r.status_code == 200 and "collapsewatch" in r.text
    # the token is for /metrics only
    assert httpx.get(api_process.url + "/api/v1/models",
                     headers={"Authorization": "Bearer scrape-secret-1"}).status_code == 401


def test_the_probe_sends_the_request_target_unchanged():
    """The raw probe itself: what the tests above send is exactly what a server receives."""
    seen = []

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    import threading

    def serve() -> None:
        conn, _ = srv.accept()
        seen.append(conn.recv(4096).split(b"\r\n")[0])
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    assert raw_get(port, "/static/..%2f//x").status == 404
    t.join(5)
    srv.close()
    assert seen == [b"GET /static/..%2f//x HTTP/1.1"]
