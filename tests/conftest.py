"""Shared fixtures. Servers come from scripts/test.sh (via environment variables).

In CI (or with COLLAPSEWATCH_TEST_REQUIRE_SERVERS=1) a missing server is a failure,
never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support import REPO

# the offline CLI keeps computed bands under ~/.cache unless told otherwise; tests (and the
# processes they start) must neither write there nor read bands an earlier run left
os.environ.setdefault("COLLAPSEWATCH_BAND_CACHE_DIR", "off")
os.environ.setdefault("COLLAPSEWATCH_EMBEDDING_CACHE_DIR", "off")  # and window embeddings
REQUIRE_SERVERS = bool(os.environ.get("COLLAPSEWATCH_TEST_REQUIRE_SERVERS") or os.environ.get("CI"))
POSTGRES_URL = os.environ.get("COLLAPSEWATCH_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("COLLAPSEWATCH_TEST_REDIS_URL")
# under pytest-xdist (scripts/test.sh: a worker per core, at most 4) each worker flushes its own
# logical database: gw0 -> /1, gw1 -> /2, ... (a run without xdist keeps the URL's own)
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if REDIS_URL and _XDIST_WORKER.startswith("gw"):
    REDIS_URL = f"{REDIS_URL.rsplit('/', 1)[0]}/{1 + int(_XDIST_WORKER[2:]) % 15}"
ARTIFACTS = REPO / "test-artifacts"

# fixtures of the REST API tests (stored references, a model, keys), usable by any test
pytest_plugins = ["tests.service.api_fixtures", "tests.service.pipeline_fixtures"]


def need(what: str, value: str | None) -> str:
    """Return ``value`` or fail (CI) / skip (a developer without the server)."""
    if value:
        return value
    msg = f"{what} is not available; run the suite with `make test`"
    if REQUIRE_SERVERS:
        pytest.fail(msg)
    pytest.skip(msg)


def need_program(name: str) -> str:
    import shutil

    return need(f"program {name!r}", shutil.which(name))


@pytest.fixture(scope="session")
def human_documents() -> list[str]:
    from service.demo.sample_data import human_documents as load

    return load()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _pg_database(base_url: str):
    """Create a fresh database on the test PostgreSQL server; return (url, drop)."""
    name = "cw_" + uuid.uuid4().hex[:16]
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base_url.rsplit("/", 1)[0] + "/" + name

    def drop() -> None:
        from service.domain.db import reset_engines

        reset_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@contextmanager
def fresh_pg_database(migrate: bool = True) -> Iterator[str]:
    """A new database on the test PostgreSQL server (migrated unless ``migrate`` is false),
    dropped at exit. Without the server: a failure in CI, a skip elsewhere."""
    url, drop = _pg_database(need("PostgreSQL", POSTGRES_URL))
    try:
        if migrate:
            from service.domain.migrate import upgrade

            upgrade(url)
        yield url
    finally:
        drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A migrated, empty database, once on SQLite and once on PostgreSQL."""
    from service.domain.migrate import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'collapsewatch.db'}"
        upgrade(url)
        yield url
        return
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A migrated, empty PostgreSQL database (for tests that only make sense there)."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def redis_url():
    """The test Redis, flushed (one logical database per test process)."""
    import redis

    url = need("Redis", REDIS_URL)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def service_env(database_url, tmp_path, monkeypatch) -> dict[str, str]:
    """Point this process's settings (and child processes' env) at the test database."""
    from service.domain.db import reset_engines
    from service.settings import get_settings

    env = {
        "COLLAPSEWATCH_DATABASE_URL": database_url,
        "COLLAPSEWATCH_DATA_DIR": str(tmp_path / "data"),
        "COLLAPSEWATCH_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        "COLLAPSEWATCH_LOG_JSON": "1",
        # the in-process app serves the tests on loopback (reads open, as for `api --host
        # 127.0.0.1`); processes started with --host set their own
        "COLLAPSEWATCH_LISTEN_HOST": "127.0.0.1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    reset_engines()
    yield env
    get_settings.cache_clear()
    reset_engines()


@pytest.fixture
def client(service_env):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.broker import reconfigure

    # an ingest that fills a window enqueues it: on this test's broker, not an earlier one's
    reconfigure()
    with TestClient(create_app()) as c:
        yield c
    reconfigure()


@pytest.fixture
def make_key(service_env):
    """make_key(scope, model=None) -> a real API key stored in the test database."""
    from service.domain.db import session_scope
    from service.domain.keys import create_key

    def _make(scope: str, model: str | None = None) -> str:
        with session_scope() as session:
            return create_key(session, scope, model)

    return _make


@pytest.fixture
def admin_headers(make_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key('admin')}"}


def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist (``make test``), files with a test marked ``slow`` go first.

    Workers take files in collection order; a long file taken last leaves the other workers
    idle while it runs, so the long ones are started early and the short ones fill in. The
    order within a file is kept (a stable sort), and every worker sorts alike, as xdist
    requires."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


def pytest_sessionstart(session) -> None:
    """In the processes that run tests, answer texts the embedding model has already
    embedded from memory (exactly its vectors; see tests/support/embedding_memo.py).
    ``COLLAPSEWATCH_TEST_EMBEDDING_MEMO=off`` leaves every text to the model."""
    if os.environ.get("COLLAPSEWATCH_TEST_EMBEDDING_MEMO", "on") == "off":
        return
    if session.config.pluginmanager.hasplugin("dsession"):
        return  # the xdist controller runs no tests
    from tests.support.embedding_memo import install

    install()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    from tests.support.embedding_memo import BYPASS, MEMO

    MEMO.active = item.path.name not in BYPASS
    yield
