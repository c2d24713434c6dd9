"""collapsewatch score keeps computed bands in a cache directory: a window size computed
once is read from the cache the next time (a new process, the same profile)."""

from __future__ import annotations

import json
import random

import pytest

from service.cli import main
from tests.support.bands import count_band_computations


@pytest.fixture(scope="module")
def files(human_documents, tmp_path_factory):
    docs = list(human_documents)
    random.Random(11).shuffle(docs)
    work = tmp_path_factory.mktemp("bandcache")
    ref_src = work / "ref.txt"
    ref_src.write_text("\n".join(d.replace("\n", " ") for d in docs[:300]))
    window = work / "window.txt"
    window.write_text("\n".join(d.replace("\n", " ") for d in docs[300:370]))
    other = work / "other.txt"
    other.write_text("\n".join(d.replace("\n", " ") for d in docs[400:490]))
    ref = work / "ref.cwp"
    assert main(["reference", "build", str(ref_src), "--name", "fortunes", "-o", str(ref),
                 "--band-sizes", "80", "--replicates", "40"]) == 0
    return ref, window, other


def _score(ref, window, capsys) -> dict:
    assert main(["score", "--reference", str(ref), str(window), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_band_computed_once_is_read_from_the_cache_dir_next_time(files, tmp_path,
                                                                     monkeypatch, capsys):
    ref, window, other = files
    monkeypatch.setenv("COLLAPSEWATCH_BAND_CACHE_DIR", str(tmp_path / "cache"))
    calls = count_band_computations(monkeypatch)
    first = _score(ref, window, capsys)
    assert len(calls) == 1  # 70 documents: a size the reference file has no band for
    stored = list((tmp_path / "cache").rglob("*.npy"))
    assert len(stored) == 1 and stored[0].name.startswith("70-")
    # a new load of the profile (like a new process): no computation, the same numbers
    again = _score(ref, window, capsys)
    assert len(calls) == 1
    assert again == first
    # another size is a miss, then a hit
    _score(ref, other, capsys)
    _score(ref, other, capsys)
    assert len(calls) == 2


def test_the_cache_can_be_turned_off(files, tmp_path, monkeypatch, capsys):
    ref, window, _ = files
    monkeypatch.setenv("COLLAPSEWATCH_BAND_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    calls = count_band_computations(monkeypatch)
    _score(ref, window, capsys)
    _score(ref, window, capsys)
    assert len(calls) == 2
    assert not (tmp_path / "xdg").exists()


def test_the_default_cache_dir_follows_xdg(tmp_path, monkeypatch):
    from service.cli.offline import band_cache_dir

    monkeypatch.delenv("COLLAPSEWATCH_BAND_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert band_cache_dir() == tmp_path / "collapsewatch" / "bands"


def test_the_cli_keys_bands_like_the_server():
    from metrics.band_cache_dir import band_key
    from service import __version__
    from service.domain.band_cache import profile_key

    for context in ("reference", "baseline of reference abc"):
        assert band_key(b"profile bytes", context, __version__) == profile_key(b"profile bytes",
                                                                                context)
    assert band_key(b"profile bytes", "reference", "0.0.0") != profile_key(b"profile bytes",
                                                                          "reference")


def test_stored_bands_of_an_older_metric_suite_are_ignored_with_a_warning(
        files, tmp_path, monkeypatch, capsys):
    """A reference built before a metric's definition changed keeps its file, but its stored
    bands are not read as the new definition's: the CLI says so, once, on stderr, and
    computes the band (the score is still made)."""
    import metrics.profile as profile_module

    ref, window, _ = files
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(profile_module, "METRIC_SUITE",
                        (*profile_module.METRIC_SUITE[:-1], "semantic_mmd@99"))
    calls = count_band_computations(monkeypatch)
    assert main(["score", "--reference", str(ref), str(window), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["health"] in {"healthy", "early_collapse"}
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1, captured.err
    assert "stored bands (80 documents)" in warnings[0]
    assert "older metric suite" in warnings[0]
    assert len(calls) == 1
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg2"))
    assert main(["score", "--reference", str(ref), str(window), "--format", "json"]) == 0
    assert "warning" not in capsys.readouterr().err
