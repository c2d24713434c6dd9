"""Shared pieces of the collector tests: the real API as a process, a model, stored samples."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.support import VENV_BIN, free_port, process, wait_http

COLLAPSEWATCH = str(VENV_BIN / "collapsewatch")


def create_model(name: str) -> str:
    """A monitored model (with a placeholder reference) and an ingest key for it."""
    from service.domain.db import session_scope
    from service.domain.keys import create_key
    from service.domain.tables import MonitoredModel, Reference

    with session_scope() as session:
        ref = Reference(name=f"ref-{name}", version=1, sha256="0" * 64, document_count=0,
                        token_count=0, documents_gz=b"", profile=b"")
        session.add(ref)
        session.flush()
        session.add(MonitoredModel(name=name, reference_id=ref.id))
        session.flush()
        return create_key(session, "ingest", name)


def stored(database_url: str, model: str) -> list[tuple[str, str, dict | None]]:
    """(client_id, text, attributes) of every stored sample of ``model``, in id order."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT s.client_id, s.text, s.attributes FROM samples s "
                "JOIN models m ON m.id = s.model_id WHERE m.name = :name ORDER BY s.id"),
                {"name": model}).all()
    finally:
        engine.dispose()
    out = []
    for client_id, body, attributes in rows:
        if isinstance(attributes, str):  # SQLite JSON comes back as text through raw SQL
            attributes = json.loads(attributes)
        out.append((client_id, body, attributes))
    return out


def timestamps(database_url: str, model: str) -> list[float]:
    """The ``timestamp`` of every stored sample of ``model`` as Unix seconds."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT s.timestamp FROM samples s JOIN models m ON m.id = s.model_id "
                "WHERE m.name = :name"), {"name": model}).scalars().all()
    finally:
        engine.dispose()
    out = []
    for value in rows:
        if isinstance(value, str):  # SQLite through raw SQL
            value = datetime.fromisoformat(value)
        out.append((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
    return out


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class ApiServer:
    """``collapsewatch api`` as a real process on loopback that can be stopped and restarted."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_path = log_dir / "api.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._cm = None
        self.proc = None
        self._started = False

    def start(self) -> None:
        # free_port() closes the port it found before the API binds it, so a process of
        # another test worker can take it in between: a first start then moves to another
        # free port (a restart keeps its port, which the collectors under test reconnect to)
        for attempt in range(3):
            before = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._cm = process([COLLAPSEWATCH, "api", "--host", "127.0.0.1", "--port",
                                str(self.port)], self.log_path, env=self.env)
            self.proc = self._cm.__enter__()
            try:
                wait_http(f"{self.url}/healthz", timeout=60, proc=self.proc.popen)
            except (TimeoutError, RuntimeError):
                self.stop()
                log = self.log_path.read_bytes()[before:].decode(errors="replace")[-3000:]
                if not self._started and attempt < 2 and "address already in use" in log:
                    self.port = free_port()
                    self.url = f"http://127.0.0.1:{self.port}"
                    continue
                raise AssertionError(f"API did not start:\n{log}") from None
            self._started = True
            return

    def stop(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill9()
        self.stop()
