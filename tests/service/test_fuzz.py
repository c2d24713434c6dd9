"""Property-based requests from the app's own OpenAPI schema (schemathesis), every route, on
SQLite and PostgreSQL, with an admin key and without one.

For every generated request: no 5xx; every 4xx is ``application/problem+json``; and a
rejected request (4xx) changes nothing stored — every row of every table is hashed before
and after it (only ``api_keys.last_used_at``, which authenticating a key may refresh, is left
out). Accepted requests may write, so the check runs against the state right before each
request. Examples per route are bounded (``EXAMPLES``) so the four runs stay within about
three minutes; the generation is derandomized, so a failure reproduces.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from sqlalchemy import select, text

from service.domain.db import session_scope
from service.domain.tables import Base
from tests.service.alert_fixtures import add_evaluation, make_channel
from tests.service.api_fixtures import store_reference

# examples per route and pass: valid by the schema, invalid by the schema, and valid with
# the path naming a stored model, alert, channel, reference or key
EXAMPLES = 8
# written by authenticating, not by the request: not part of the "nothing changed" check
VOLATILE = {("api_keys", "last_used_at")}


def snapshot() -> dict[str, str]:
    """A digest of every table's rows (in primary key order)."""
    out = {}
    with session_scope() as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if (table.name, c.name) not in VOLATILE]
            rows = session.execute(select(*columns).order_by(*table.primary_key.columns)).all()
            out[table.name] = hashlib.sha256(repr(rows).encode()).hexdigest()
            out[table.name + "#rows"] = str(len(rows))
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted({k.split("#")[0] for k in before.keys() | after.keys()
                   if before.get(k) != after.get(k)})


def content_type(response) -> str:
    value = response.headers.get("content-type") or ""
    # schemathesis keeps every header as a list of values
    return value[0] if isinstance(value, list) else value


@dataclass
class Findings:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def crash(self, case, exc: Exception) -> None:
        self.statuses[500] = self.statuses.get(500, 0) + 1
        if len(self.problems) < 40:
            self.problems.append(f"{case.method} {case.formatted_path} query={case.query} "
                                 f"body={str(case.body)[:200]!r} -> 500: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}")

    def add(self, case, response, what: str) -> None:
        if len(self.problems) < 40:
            body = response.text[:300].replace("\n", " ")
            self.problems.append(f"{case.method} {case.formatted_path} "
                                 f"query={case.query} body={str(case.body)[:200]!r} -> "
                                 f"{response.status_code}: {what}: {body}")


def seed(reference_profile, reference_documents) -> dict[str, object]:
    """A reference, a model with evaluations, a firing alert with outbox rows, and a channel:
    something for reads, acks and deletes to find. Returns their path parameters."""
    from service.domain import alerts as engine
    from service.domain.tables import Alert, MonitoredModel

    reference_id = store_reference(reference_profile, reference_documents)
    with session_scope() as s:
        model = MonitoredModel(name="bot", reference_id=reference_id, window_size=10,
                               window_max_age_seconds=3600, window_min_size=5,
                               auto_baseline_windows=0)
        s.add(model)
        s.flush()
        model_id = model.id
    channel_id = make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/hook"})
    for _ in range(2):
        add_evaluation(model_id, "collapse")
    with session_scope() as s:
        engine.evaluate_model(s, model_id)
        alert_id = s.scalar(select(Alert.id).order_by(Alert.id).limit(1))
    return {"name": "bot", "reference_id": reference_id, "alert_id": alert_id,
            "channel_id": channel_id, "kind": "collapse"}


@pytest.mark.parametrize("who", ["admin", "anonymous"])
@pytest.mark.slow
def test_fuzzed_requests_get_no_5xx_problem_4xx_and_change_nothing_when_rejected(
        service_env, reference_profile, reference_documents, who, monkeypatch):
    from service.api.app import create_app
    from service.broker import reconfigure
    from service.domain.keys import create_key
    from service.settings import get_settings

    # no rate limit: the fuzzer sends hundreds of requests a second with one key
    monkeypatch.setenv("COLLAPSEWATCH_RATE_LIMIT_PER_KEY", "0")
    get_settings.cache_clear()
    reconfigure()
    seeded = seed(reference_profile, reference_documents)
    app = create_app()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    found = Findings()
    admin: dict[str, str] = {}
    state: dict[str, dict[str, str]] = {}

    def auth() -> dict[str, str]:
        if who == "anonymous":
            return {}
        # the fuzzer may revoke or delete the key it runs with: then it gets a new one
        with session_scope() as s:
            alive = admin and s.execute(text(
                "SELECT count(*) FROM api_keys WHERE id = :id AND revoked_at IS NULL"),
                {"id": admin["id"]}).scalar()
            if not alive:
                state.pop("last", None)  # a new key row: the next snapshot is taken afresh
                key = create_key(s, "admin", description="fuzz")
                row = s.execute(text("SELECT max(id) FROM api_keys")).scalar()
                admin.update(id=row, header=f"Bearer {key}")
        return {"Authorization": admin["header"]}

    auth()
    if admin:
        seeded["key_id"] = admin["id"]  # the key the fuzzer runs with: revoking it is allowed
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30  # every route of the API, not a subset
    passes = []
    for operation in operations:
        passes.append((operation, schemathesis.GenerationMode.POSITIVE, None))
        passes.append((operation, schemathesis.GenerationMode.NEGATIVE, None))
        names = {p.name for p in operation.path_parameters}
        if names:
            # random names and ids are nearly always 404: once more on what is stored
            passes.append((operation, schemathesis.GenerationMode.POSITIVE,
                           {n: seeded[n] for n in names if n in seeded}))
    # deletes last: a deleted seed model would turn every later request into a 404
    passes.sort(key=lambda p: p[0].method.upper() == "DELETE")
    for operation, mode, path_parameters in passes:
        strategy = operation.as_strategy(generation_mode=mode,
                                         path_parameters=path_parameters)

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case):
            headers = auth()
            # the state after a rejected request is the state before the next one
            before = state.pop("last", None) or snapshot()
            try:
                response = case.call(headers=headers)
            except Exception as exc:  # noqa: BLE001 - the test client re-raises a 500
                found.requests += 1
                found.crash(case, exc)
                state.pop("last", None)
                return
            found.requests += 1
            status = response.status_code
            found.statuses[status] = found.statuses.get(status, 0) + 1
            if status >= 500:
                found.add(case, response, "server error")
            elif status >= 400:
                kind = content_type(response)
                if not kind.startswith("application/problem+json"):
                    found.add(case, response, f"4xx as {kind!r}")
                after = state["last"] = snapshot()
                diff = changed(before, after)
                if diff:
                    found.add(case, response, f"rejected but changed {diff}")

        try:
            run()
        except Unsatisfiable:
            # nothing in this route's schema can be made invalid (no parameters, no body)
            assert mode == schemathesis.GenerationMode.NEGATIVE, operation.path
    print(f"\nfuzz ({who}): {found.requests} requests over {len(operations)} routes; "
          f"statuses {dict(sorted(found.statuses.items()))}")
    assert not found.problems, "\n".join(found.problems)
    assert found.requests >= len(operations) * 2  # the generator did reach every route
