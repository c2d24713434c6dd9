"""Fixtures shared by the REST API tests (imported by the test_api_* modules).

Profiles are built once per session with the real metrics library; each test stores them
into its own fresh database (SQLite and PostgreSQL through ``database_url``).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from datetime import datetime

import pytest
from sqlalchemy import func, select

REFERENCE_SIZE = 240


@pytest.fixture(scope="session")
def reference_documents(human_documents) -> list[str]:
    return human_documents[:REFERENCE_SIZE]


@pytest.fixture(scope="session")
def reference_profile(reference_documents):
    import metrics

    return metrics.build_reference(reference_documents, "fortunes")


@pytest.fixture(scope="session")
def baseline_profile(human_documents, reference_profile):
    """A baseline profile (220 human documents) against ``reference_profile``."""
    import metrics

    docs = human_documents[REFERENCE_SIZE:REFERENCE_SIZE + 220]
    return metrics.build_baseline(docs, reference_profile, "bot-baseline")


def store_reference(profile, documents: list[str], name: str = "fortunes",
                    version: int = 1) -> int:
    """Insert a reference row for a prebuilt profile (what POST /references stores)."""
    from service.domain.db import session_scope
    from service.domain.tables import Reference

    with session_scope() as session:
        row = Reference(
            name=name, version=version, sha256=profile.sha256,
            document_count=profile.document_count, token_count=profile.token_count,
            documents_gz=gzip.compress(json.dumps(documents).encode()),
            profile=profile.to_bytes(),
        )
        session.add(row)
        session.flush()
        return row.id


@pytest.fixture
def stored_reference(service_env, reference_profile, reference_documents) -> int:
    return store_reference(reference_profile, reference_documents)


@pytest.fixture
def model_name(client, admin_headers, stored_reference) -> str:
    r = client.post("/api/v1/models", json={"name": "bot", "reference_id": stored_reference},
                    headers=admin_headers)
    assert r.status_code == 201, r.text
    return "bot"


@pytest.fixture
def ingest_headers(make_key, model_name) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key('ingest', model_name)}"}


@dataclass(frozen=True)
class Stored:
    """Everything a bad request must leave untouched."""

    samples: tuple
    models: tuple
    references: tuple
    keys: int


def stored_state() -> Stored:
    from service.domain.db import session_scope
    from service.domain.tables import ApiKey, MonitoredModel, Reference, Sample

    def norm(value):
        return value.replace(tzinfo=None) if isinstance(value, datetime) else value

    with session_scope() as s:
        samples = tuple(s.execute(select(Sample.model_id, Sample.client_id, Sample.text)
                                  .order_by(Sample.id)).all())
        models = tuple(tuple(norm(v) for v in row) for row in s.execute(
            select(MonitoredModel.name, MonitoredModel.reference_id, MonitoredModel.baseline_id,
                   MonitoredModel.window_size, MonitoredModel.window_max_age_seconds,
                   MonitoredModel.window_min_size, MonitoredModel.auto_baseline_windows,
                   MonitoredModel.description, MonitoredModel.samples_ingested,
                   MonitoredModel.last_sample_at, MonitoredModel.updated_at)
            .order_by(MonitoredModel.id)).all())
        references = tuple(s.execute(select(Reference.name, Reference.version, Reference.sha256)
                                     .order_by(Reference.id)).all())
        keys = s.scalar(select(func.count()).select_from(ApiKey))
    return Stored(samples, models, references, keys)


def assert_problem(response, status: int, *words: str) -> dict:
    """An RFC 9457 problem with ``status`` whose detail mentions every word; no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["type"] == "about:blank"
    assert "Traceback" not in response.text
    for word in words:
        assert word.lower() in body["detail"].lower(), (word, body["detail"])
    return body


def samples(n: int, start: int = 0, prefix: str = "s") -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": f"output number {i} of the model"}
            for i in range(start, start + n)]
