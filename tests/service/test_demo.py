"""The demo of ``collapsewatch serve --demo``: its parts, and the real command end to end."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from service.demo import seed as demo
from service.domain.db import session_scope
from service.domain.tables import ApiKey, Reference
from tests.service.demo_support import models_by_name as _models
from tests.service.demo_support import wait_for as _wait
from tests.support import VENV_BIN, free_port, process, wait_http

FAST = demo.DemoConfig(reference_documents=400, window_size=60, samples_per_second=40.0,
                       generation_seconds=3.0, train_documents=200, baseline_documents=220,
                       final_generation=3)


def test_split_is_disjoint_deterministic_and_keeps_the_reference_size(human_documents):
    config = demo.DemoConfig()
    split = demo.split_documents(human_documents, config)
    again = demo.split_documents(human_documents, config)
    assert split == again
    assert len(split.reference) == config.reference_documents
    parts = [set(split.reference), set(split.stable), set(split.generator)]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert min(len(split.stable), len(split.generator)) > 3000


def test_stable_stream_repeats_nothing_within_a_cycle_and_reshuffles_the_next():
    pool = [f"document {i}" for i in range(50)]
    stream = demo.StableStream(pool, seed=3)
    first = [stream.document(n) for n in range(50)]
    second = [stream.document(n) for n in range(50, 100)]
    assert sorted(first) == sorted(pool) == sorted(second)
    assert first != second
    assert demo.StableStream(pool, seed=3).document(77) == second[27]


def test_recursive_stream_advances_one_generation_per_period_and_is_reproducible(
        human_documents):
    config = replace(FAST, samples_per_second=10.0, generation_seconds=5.0)  # 50 per generation
    split = demo.split_documents(human_documents, config)
    stream = demo.RecursiveStream(split.generator, config)
    assert [stream.generation_of(n) for n in (0, 49, 50, 149, 150, 10_000)] == [0, 0, 1, 2, 3, 3]
    docs = [stream.document(n) for n in range(0, 200, 7)]
    assert all(isinstance(d, str) and d.strip() for d in docs)
    # a restart rebuilds the same chain: the same sample index gives the same text
    again = demo.RecursiveStream(split.generator, config)
    assert [again.document(n) for n in range(0, 200, 7)] == docs
    # the baseline is fresh generation-0 output, not the streamed samples
    baseline = stream.baseline_documents()
    assert len(baseline) == config.baseline_documents
    assert baseline[:50] != [stream.document(n) for n in range(50)]


def test_recursive_generations_lose_rare_words(human_documents):
    """The demo's premise: retraining on its own output shrinks the vocabulary."""
    config = replace(FAST, samples_per_second=10.0, generation_seconds=30.0)  # 300 per gen
    stream = demo.RecursiveStream(demo.split_documents(human_documents, config).generator,
                                  config)

    def vocabulary(generation: int) -> int:
        start = generation * config.samples_per_generation
        words = set()
        for n in range(start, start + 300):
            words.update(stream.document(n).lower().split())
        return len(words)

    sizes = [vocabulary(g) for g in range(config.final_generation + 1)]
    assert sizes[-1] < 0.8 * sizes[0], sizes


def test_demo_keys_revoke_the_previous_run(service_env):
    first_admin, _ = demo.create_demo_keys()
    second = demo.create_demo_keys()
    assert first_admin not in second
    with session_scope() as session:
        active = session.scalar(select(func.count()).select_from(ApiKey).where(
            ApiKey.description == demo.KEY_DESCRIPTION, ApiKey.revoked_at.is_(None)))
        assert active == 2


def test_demo_sets_up_once_feeds_through_the_api_and_stops_promptly(live_demo_api):
    base = live_demo_api
    stop = threading.Event()
    thread = threading.Thread(target=demo.start_demo, args=(stop, base, FAST), daemon=True)
    thread.start()
    try:
        models = _wait("both demo models with samples", lambda: (
            m if {demo.STABLE, demo.RECURSIVE} <= set(m := _models(base))
            and all(m[n]["samples_ingested"] >= 100 for n in (demo.STABLE, demo.RECURSIVE))
            else None), timeout=180)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive(), "the demo did not stop within 15 s of stop_event"

    recursive = models[demo.RECURSIVE]
    stable = models[demo.STABLE]
    assert recursive["baseline"] is not None and recursive["baseline_status"] == "set"
    assert stable["baseline_status"] in ("collecting", "set")
    assert recursive["window"]["size"] == FAST.window_size
    assert "demo" in recursive["description"].lower() and "demo" in stable["description"].lower()
    assert recursive["reference"]["name"] == demo.REFERENCE_NAME

    # a second start reuses the reference and the models and continues the sample ids
    before = {n: m["samples_ingested"] for n, m in _models(base).items()}
    stop = threading.Event()
    thread = threading.Thread(target=demo.start_demo, args=(stop, base, FAST), daemon=True)
    thread.start()
    try:
        _wait("the restarted demo to ingest more", lambda: all(
            _models(base)[n]["samples_ingested"] >= before[n] + 80
            for n in (demo.STABLE, demo.RECURSIVE)), timeout=120)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Reference).where(
            Reference.name == demo.REFERENCE_NAME)) == 1
    assert set(_models(base)) == {demo.STABLE, demo.RECURSIVE}


@pytest.fixture
def live_demo_api(service_env, tmp_path) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [str(VENV_BIN / "collapsewatch"), "api", "--host", "127.0.0.1", "--port", str(port)]
    with process(args, tmp_path / "api.log", env=service_env) as proc:
        wait_http(f"{base}/readyz", timeout=60, proc=proc.popen)
        yield base
