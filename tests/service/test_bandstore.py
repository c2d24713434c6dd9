"""Computed bands kept in the database (service.domain.band_cache), on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select, text

import metrics
from service.domain.tables import BandCache
from tests.service.api_fixtures import store_reference
from tests.service.pipeline_fixtures import WINDOW, add_model, ingest, plan_now, score_now
from tests.support.bands import count_band_computations

REPLICATES = 10


@pytest.fixture(scope="module")
def small_profile(human_documents) -> metrics.Profile:
    cfg = metrics.ReferenceConfig(replicates=REPLICATES)
    return metrics.build_reference(human_documents[:400], "store", config=cfg)


def _fresh(profile: metrics.Profile, context: str = "reference"):
    """The profile as another process would load it, with a database store."""
    from service.domain.band_cache import DatabaseBandStore, profile_key

    data = profile.to_bytes()
    loaded = metrics.Profile.from_bytes(data)
    loaded.band_store = DatabaseBandStore(profile_key(data, context))
    return loaded


def test_round_trip_and_repeated_saves(service_env):
    from service.domain.band_cache import DatabaseBandStore

    store = DatabaseBandStore("k" * 64)
    matrix = np.arange(40, dtype=float).reshape(10, 4)
    matrix[3, 2] = np.nan
    assert store.load(60, 900) is None and store.load_any(60) is None
    store.save(60, 900, matrix)
    store.save(60, 900, matrix + 1)  # a second process computed it too: the first row stays
    np.testing.assert_array_equal(store.load(60, 900), matrix)
    np.testing.assert_array_equal(store.load_any(60), matrix)
    assert store.load(60, 901) is None and store.load_any(61) is None
    assert DatabaseBandStore("j" * 64).load(60, 900) is None


def test_another_process_reads_the_band_instead_of_computing_it(service_env, small_profile,
                                                                monkeypatch):
    calls = count_band_computations(monkeypatch)
    first = _fresh(small_profile).band(80, 1100)
    assert calls == [(80, 1100, False)]
    second = _fresh(small_profile)
    np.testing.assert_array_equal(second.band(80, 1100), first)
    assert len(calls) == 1
    # a new budget in a fresh process reuses the stored band's document columns
    second_new = _fresh(small_profile).band(80, 1300)
    assert calls[-1] == (80, 1300, True)
    np.testing.assert_array_equal(
        second_new, metrics.Profile.from_bytes(small_profile.to_bytes()).band(80, 1300))


def test_bands_of_other_profiles_or_contexts_are_not_shared(service_env, small_profile,
                                                            human_documents, monkeypatch):
    _fresh(small_profile).band(70, 1000)
    calls = count_band_computations(monkeypatch)
    _fresh(small_profile, context="baseline of reference 7").band(70, 1000)
    other = metrics.build_reference(human_documents[400:800], "other",
                                    config=metrics.ReferenceConfig(replicates=REPLICATES))
    _fresh(other).band(70, 1000)
    assert calls == [(70, 1000, False), (70, 1000, False)]


def test_a_broken_store_costs_a_computation_not_a_failure(service_env, small_profile, caplog):
    from service.domain.db import session_scope

    with session_scope() as session:
        session.execute(text("DROP TABLE band_cache"))
    profile = _fresh(small_profile)
    band = profile.band(60, 900)
    assert band.shape == (REPLICATES, len(metrics.REGISTRY))
    messages = [r.getMessage() for r in caplog.records]
    assert "could not read a stored band; computing it" in messages
    assert "could not store a computed band" in messages


def test_scoring_a_window_stores_its_human_band(pipeline_env, reference_profile,
                                                reference_documents, window_documents):
    from service.domain.db import session_scope
    from service.domain.profiles import PROFILES

    PROFILES.clear()
    ref = store_reference(reference_profile, reference_documents)
    add_model("bot", ref, size=WINDOW)
    ingest("bot", window_documents[:WINDOW])
    (evaluation_id,) = plan_now()
    assert score_now(evaluation_id).status == "done"
    with session_scope() as session:
        rows = session.execute(select(BandCache.n_docs, BandCache.budget)).all()
    assert [n for n, _ in rows] == [WINDOW]


def _used_at(key: str) -> dict[tuple[int, int], object]:
    from service.domain.db import session_scope

    with session_scope() as session:
        return {(n, b): used for n, b, used in session.execute(
            select(BandCache.n_docs, BandCache.budget, BandCache.used_at)
            .where(BandCache.profile_key == key))}


def test_rows_unused_for_the_keep_time_are_dropped_and_reads_keep_rows_alive(service_env):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from service.domain.band_cache import DatabaseBandStore, purge_unused
    from service.domain.db import session_scope
    from service.worker.tasks import reap

    store = DatabaseBandStore("p" * 64)
    matrix = np.ones((3, 2))
    for budget in (100, 200, 300):
        store.save(50, budget, matrix)
    long_ago = datetime.now(UTC) - timedelta(days=40)
    with session_scope() as session:
        session.execute(update(BandCache).where(BandCache.budget.in_((200, 300)))
                        .values(used_at=long_ago))
    assert store.load(50, 300) is not None  # read now: no longer unused
    assert purge_unused(keep_days=30) == 1
    assert sorted(_used_at("p" * 64)) == [(50, 100), (50, 300)]
    # the reaper does it on its rounds
    reap(now=datetime.now(UTC) + timedelta(days=31))
    assert _used_at("p" * 64) == {}


def test_a_references_band_grid_serves_windows_between_its_sizes(pipeline_env, human_documents,
                                                                 monkeypatch):
    """The worker's reference_bands task (sent when POST /references creates a reference)
    computes the human bands at REFERENCE_BAND_SIZES that the reference's pool can serve
    into the database; a window between two of those sizes is then scored with a band
    interpolated between them, and no band is computed for it."""
    from service.domain.band_cache import profile_key
    from service.domain.db import session_scope
    from service.domain.profiles import PROFILES
    from service.domain.tables import Evaluation
    from service.worker.tasks import reference_bands

    PROFILES.clear()
    # shuffled fortunes: the window's documents are as long as the pool's on average, so
    # its token budget falls between the grid's too
    shuffled = random.Random(11).sample(human_documents, 841)
    docs, window = shuffled[:700], shuffled[700:]
    profile = metrics.build_reference(docs, "grid", embedder=None,
                                      config=metrics.ReferenceConfig(replicates=REPLICATES))
    assert profile.pool.n_docs == 280
    ref = store_reference(profile, docs, name="grid")
    keys = [tuple(k) for k in reference_bands.run(ref)["bands"]]
    # 500, 1,000, 2,000: more than the pool; 50 also at budgets below its own (band_grid)
    assert sorted({n for n, _ in keys}) == [50, 100, 200]
    assert keys == metrics.reference.band_grid(profile.pool, (50, 100, 200))
    with session_scope() as session:
        stored = session.execute(
            select(BandCache.n_docs, BandCache.budget)
            .where(BandCache.profile_key == profile_key(profile.to_bytes(), "reference"))
            .order_by(BandCache.n_docs, BandCache.budget)).all()
    assert [tuple(row) for row in stored] == keys

    PROFILES.clear()  # as another worker process would load it
    calls = count_band_computations(monkeypatch)
    add_model("bot", ref, size=141)
    ingest("bot", window)
    (evaluation_id,) = plan_now()
    assert score_now(evaluation_id).status == "done"
    assert calls == []
    with session_scope() as session:
        result = session.get(Evaluation, evaluation_id).result
    # between the stored 100 and 200 (their budgets bracket the window's too)
    assert result["calibration"]["human"]["interpolated_from"] == [list(k) for k in keys[-2:]]
    assert result["health"] == "healthy"


def test_an_unknown_reference_or_no_grid_computes_nothing(pipeline_env, monkeypatch, caplog):
    from service.settings import get_settings
    from service.worker.tasks import reference_bands

    calls = count_band_computations(monkeypatch)
    assert reference_bands.run(999_999)["bands"] == []
    assert "reference bands not computed; they are computed on first use" in [
        r.getMessage() for r in caplog.records]
    monkeypatch.setenv("COLLAPSEWATCH_REFERENCE_BAND_SIZES", "")
    get_settings.cache_clear()
    assert get_settings().reference_band_grid == ()
    monkeypatch.setenv("COLLAPSEWATCH_REFERENCE_BAND_SIZES", "200, 100,100")
    get_settings.cache_clear()
    assert get_settings().reference_band_grid == (100, 200)
    monkeypatch.setenv("COLLAPSEWATCH_REFERENCE_BAND_SIZES", "100;200")
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="reference_band_sizes"):
        get_settings()
    monkeypatch.delenv("COLLAPSEWATCH_REFERENCE_BAND_SIZES")
    get_settings.cache_clear()
    assert calls == []


def test_a_profile_with_bands_of_an_older_metric_suite_is_loaded_with_a_warning(
        service_env, human_documents, monkeypatch, caplog):
    """A stored reference whose file holds bands of an older metric suite: the worker logs
    which sizes it ignores (they are computed on first use) instead of silently scoring
    slower."""
    import metrics.profile as profile_module
    from service.domain.profiles import ProfileCache

    cfg = metrics.ReferenceConfig(replicates=REPLICATES, band_sizes=(60,))
    data = metrics.build_reference(human_documents[:400], "old", config=cfg,
                                   embedder=None).to_bytes()
    cache = ProfileCache()
    assert not cache.get("a" * 64, lambda: data).stale_band_sizes
    assert "stale stored bands ignored" not in [r.getMessage() for r in caplog.records]
    monkeypatch.setattr(profile_module, "METRIC_SUITE",
                        (*profile_module.METRIC_SUITE[:-1], "semantic_mmd@99"))
    profile = cache.get("b" * 64, lambda: data)
    assert profile.stale_band_sizes == (60,) and not profile.stored_bands
    records = [r for r in caplog.records if r.getMessage() == "stale stored bands ignored"]
    assert len(records) == 1 and records[0].band_sizes == [60]


def test_a_reference_without_its_grid_gets_it_after_its_first_scored_window(
        pipeline_env, human_documents, monkeypatch):
    """A reference stored without its band grid (created before grids were computed at
    POST /references, or its task lost): the worker that scores a window against it sends
    reference_bands once per process; once the grid is complete, nothing is sent."""
    from service.domain.profiles import PROFILES
    from service.worker import tasks

    PROFILES.clear()
    monkeypatch.setattr(tasks, "_GRID_CHECKED", set())
    sent: list[int] = []
    monkeypatch.setattr(tasks, "enqueue_reference_bands", sent.append)
    shuffled = random.Random(12).sample(human_documents, 700 + 3 * WINDOW)
    docs, window = shuffled[:700], shuffled[700:]
    profile = metrics.build_reference(docs, "nogrid", embedder=None,
                                      config=metrics.ReferenceConfig(replicates=REPLICATES))
    ref = store_reference(profile, docs, name="nogrid")
    add_model("old-ref", ref, size=WINDOW)
    # just created: its own grid task (sent by POST /references) is left to finish
    ingest("old-ref", window[:WINDOW], start=10_000)
    (evaluation_id,) = plan_now()
    assert tasks.score_window.run(evaluation_id)["status"] == "done"
    assert sent == [] and ref not in tasks._GRID_CHECKED
    from service.domain.db import session_scope
    from service.domain.tables import Reference

    with session_scope() as session:  # a reference from before the upgrade
        session.get(Reference, ref).created_at = datetime.now(UTC) - timedelta(days=30)
    for i in range(2):
        ingest("old-ref", window[i * WINDOW:(i + 1) * WINDOW], start=i * WINDOW)
        (evaluation_id,) = plan_now()
        assert tasks.score_window.run(evaluation_id)["status"] == "done"
    assert sent == [ref]  # once, not per window
    assert sorted({n for n, _ in tasks.reference_bands.run(ref)["bands"]}) == [50, 100, 200]
    monkeypatch.setattr(tasks, "_GRID_CHECKED", set())  # another worker process
    ingest("old-ref", window[2 * WINDOW:], start=2 * WINDOW)
    (evaluation_id,) = plan_now()
    assert tasks.score_window.run(evaluation_id)["status"] == "done"
    assert sent == [ref]
