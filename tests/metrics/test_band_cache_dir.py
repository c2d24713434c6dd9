"""DirectoryBandStore: bands on local files, any failure a miss."""

from __future__ import annotations

import numpy as np
import pytest

from metrics.band_cache_dir import DirectoryBandStore

KEY = "ab" * 32


def test_a_saved_band_is_loaded_back_exactly(tmp_path):
    store = DirectoryBandStore(tmp_path, KEY)
    matrix = np.random.default_rng(1).random((40, 7))
    assert store.load(500, 20000) is None and store.load_any(500) is None
    store.save(500, 20000, matrix)
    assert np.array_equal(store.load(500, 20000), matrix)
    assert np.array_equal(store.load_any(500), matrix)
    assert store.load(500, 30000) is None and store.load_any(501) is None
    # nothing half-written is left behind
    assert [p.name for p in (tmp_path / KEY).iterdir()] == ["500-20000.npy"]
    store.save(100, 3000, matrix)
    (tmp_path / KEY / "notes.txt").write_text("not a band")
    assert store.stored_keys() == [(100, 3000), (500, 20000)]
    assert DirectoryBandStore(tmp_path / "absent", KEY).stored_keys() == []


def test_bands_in_the_store_are_interpolated_between(tmp_path, human_documents, monkeypatch):
    """A profile whose store holds bands at two sizes (computed earlier, by this or another
    process) interpolates between them for a window in between instead of computing."""
    import metrics
    from tests.support.bands import count_band_computations

    docs = human_documents[:1500:2] + human_documents[1:1500:2]
    cfg = metrics.ReferenceConfig(replicates=12)
    ref = metrics.build_reference(docs[:1000], "stored", config=cfg, embedder=None)
    store = DirectoryBandStore(tmp_path, KEY)
    ref.band_store = store
    grid = metrics.reference.band_grid(ref.pool, (100, 200))
    for n, budget in grid:
        ref.band(n, budget)
    assert store.stored_keys() == grid
    fresh = metrics.Profile.from_bytes(ref.to_bytes())
    fresh.band_store = store
    calls = count_band_computations(monkeypatch)
    budget = metrics.reference.default_budget(fresh.pool, 141)
    band, used = fresh.band_with_origin(141, budget)
    assert calls == [] and used == grid[-2:]  # the others: the 100-document size's lower budgets
    assert band.shape == (12, len(metrics.REGISTRY))
    # a band the store holds under the window's own key is read once, then memoised
    reads = []
    real_load = store.load
    monkeypatch.setattr(store, "load", lambda *key: reads.append(key) or real_load(*key))
    exact, used = fresh.band_with_origin(*grid[1])
    assert used is None and reads == [grid[1]] and calls == []
    np.testing.assert_array_equal(exact, real_load(*grid[1]))
    again, _ = fresh.band_with_origin(*grid[1])
    assert again is exact and reads == [grid[1]]


def test_a_corrupt_or_unwritable_cache_is_a_miss(tmp_path):
    store = DirectoryBandStore(tmp_path, KEY)
    (tmp_path / KEY).mkdir()
    (tmp_path / KEY / "500-20000.npy").write_bytes(b"not a numpy file")
    assert store.load(500, 20000) is None and store.load_any(500) is None
    blocked = DirectoryBandStore(tmp_path / "file-not-dir" / "x", KEY)
    (tmp_path / "file-not-dir").write_text("")
    blocked.save(10, 10, np.zeros((2, 2)))  # no exception
    assert blocked.load(10, 10) is None


def test_keys_are_hex_only(tmp_path):
    with pytest.raises(ValueError):
        DirectoryBandStore(tmp_path, "../../etc")


def test_a_band_key_names_the_profile_its_context_and_the_code_version():
    from metrics.band_cache_dir import band_key

    key = band_key(b"profile", "reference", "1.0")
    assert DirectoryBandStore("/tmp", key).dir.name == key  # a valid directory key
    assert band_key(b"profile", "reference", "1.0") == key
    others = {band_key(b"profile!", "reference", "1.0"), band_key(b"profile", "baseline", "1.0"),
              band_key(b"profile", "reference", "1.1")}
    assert key not in others and len(others) == 3


def test_a_write_that_fails_half_way_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A band whose file cannot be renamed into place (or whose writing fails) is a miss
    next time, and its temporary file is gone: a full disk does not fill with litter."""
    import os

    import metrics.atomic

    store = DirectoryBandStore(tmp_path, KEY)

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics.atomic.os, "replace", refuse)
    store.save(500, 20000, np.ones((4, 3)))
    assert store.load(500, 20000) is None
    assert os.listdir(tmp_path / KEY) == []
    monkeypatch.undo()

    def fail(fh):
        fh.write(b"half")
        raise OSError(5, "I/O error")

    assert metrics.atomic.write_atomic(tmp_path / KEY / "x.bin", fail) is False
    assert os.listdir(tmp_path / KEY) == []
