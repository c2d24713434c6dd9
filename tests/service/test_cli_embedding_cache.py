"""collapsewatch score keeps window embeddings in a cache directory: scoring the same file
again reads them instead of loading the embedding model; a damaged entry is recomputed and
rewritten; ``off`` turns the cache off. Observed through the cache's files and the CLI's
"embedding cache" log line (hits, misses, writes, whether the model was loaded)."""

from __future__ import annotations

import json
import logging
import random

import pytest

from service.cli import main

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def files(human_documents, tmp_path_factory):
    docs = list(human_documents)
    random.Random(5).shuffle(docs)
    work = tmp_path_factory.mktemp("embcache")
    src = work / "ref.txt"
    src.write_text("\n".join(" ".join(d.split()) for d in docs[:240]))
    window = work / "window.txt"
    window.write_text("\n".join(" ".join(d.split()) for d in docs[300:380]))
    return src, window


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLAPSEWATCH_EMBEDDING_CACHE_DIR", str(tmp_path / "embeddings"))
    monkeypatch.setenv("COLLAPSEWATCH_BAND_CACHE_DIR", str(tmp_path / "bands"))
    return tmp_path / "embeddings"


def _build(src, out, capsys):
    assert main(["reference", "build", str(src), "--name", "ref", "-o", str(out),
                 "--band-sizes", "", "--replicates", "20"]) == 0
    capsys.readouterr()


def _score(ref, window, capsys, caplog) -> tuple[dict, dict | None]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="collapsewatch.cli"):
        assert main(["score", "--reference", str(ref), str(window)]) == 0
    lines = [r for r in caplog.records if r.getMessage() == "embedding cache"]
    stats = None
    if lines:
        (line,) = lines
        stats = {k: getattr(line, k) for k in ("hits", "misses", "writes", "model_loaded")}
    return json.loads(capsys.readouterr().out), stats


def test_a_repeated_score_reads_the_window_embeddings_instead_of_the_model(
        files, tmp_path, cache_env, capsys, caplog):
    src, window = files
    ref = tmp_path / "ref.cwp"
    _build(src, ref, capsys)
    first, stats = _score(ref, window, capsys, caplog)
    assert first["metrics"]["semantic_similarity"]["value"] is not None
    assert stats == {"hits": 0, "misses": 1, "writes": 1, "model_loaded": True}
    entries = set(cache_env.rglob("*.vec"))
    again, stats = _score(ref, window, capsys, caplog)
    assert stats == {"hits": 1, "misses": 0, "writes": 0, "model_loaded": False}
    assert again == first  # the same numbers, bit for bit
    assert set(cache_env.rglob("*.vec")) == entries


def test_a_damaged_entry_is_embedded_again_and_rewritten(
        files, tmp_path, cache_env, capsys, caplog):
    src, window = files
    ref = tmp_path / "ref.cwp"
    _build(src, ref, capsys)
    before = set(cache_env.rglob("*.vec"))  # the reference's own embeddings
    first, _ = _score(ref, window, capsys, caplog)
    (entry,) = set(cache_env.rglob("*.vec")) - before
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2])
    again, stats = _score(ref, window, capsys, caplog)
    assert stats == {"hits": 0, "misses": 1, "writes": 1, "model_loaded": True}
    assert again == first
    assert entry.read_bytes() == data
    assert _score(ref, window, capsys, caplog)[1]["model_loaded"] is False


def test_the_embedding_cache_can_be_turned_off(files, tmp_path, monkeypatch, capsys, caplog):
    src, window = files
    monkeypatch.setenv("COLLAPSEWATCH_EMBEDDING_CACHE_DIR", "off")
    monkeypatch.setenv("COLLAPSEWATCH_BAND_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ref = tmp_path / "ref.cwp"
    _build(src, ref, capsys)
    first, stats = _score(ref, window, capsys, caplog)
    assert stats is None  # no cache: nothing to report
    assert first["metrics"]["semantic_similarity"]["value"] is not None
    assert _score(ref, window, capsys, caplog)[0] == first
    assert not (tmp_path / "xdg").exists()


def test_the_default_embedding_cache_dir_follows_xdg(tmp_path, monkeypatch):
    from service.cli.offline import embedding_cache_dir

    monkeypatch.delenv("COLLAPSEWATCH_EMBEDDING_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert embedding_cache_dir() == tmp_path / "collapsewatch" / "embeddings"
