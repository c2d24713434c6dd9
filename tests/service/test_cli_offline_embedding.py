"""The offline CLI embeds with the model of COLLAPSEWATCH_EMBEDDING_MODEL, as the worker does
(service.domain.profiles.configured_embedder); a configured model that cannot be loaded is a
one-line error (exit 2) and writes nothing."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from service.cli import main
from service.settings import get_settings

pytest.importorskip("onnxruntime")


@pytest.fixture
def embedding_env(monkeypatch):
    """Set (model, tokenizer) paths for one call; settings are re-read around it."""

    def _set(model: Path | str | None, tokenizer: Path | str | None) -> None:
        for var, value in (("COLLAPSEWATCH_EMBEDDING_MODEL", model),
                           ("COLLAPSEWATCH_EMBEDDING_TOKENIZER", tokenizer)):
            if value is None:
                monkeypatch.delenv(var, raising=False)
            else:
                monkeypatch.setenv(var, str(value))
        get_settings.cache_clear()

    yield _set
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def renamed_model(tmp_path_factory) -> tuple[Path, Path]:
    """The pinned model's files under another name: the same vectors, another identity
    (an embedder's identity starts with its file name), so which one was used shows."""
    from metrics.embedding import default_model_files

    model, tokenizer = default_model_files()
    root = tmp_path_factory.mktemp("model")
    shutil.copy(model, root / "renamed.onnx")
    shutil.copy(tokenizer, root / "tokenizer.json")
    return root / "renamed.onnx", root / "tokenizer.json"


@pytest.fixture(scope="module")
def inputs(human_documents, tmp_path_factory) -> dict[str, Path]:
    docs = list(human_documents)
    random.Random(11).shuffle(docs)
    root = tmp_path_factory.mktemp("docs")
    out = {}
    for name, part in (("reference", docs[:240]), ("window", docs[300:400])):
        out[name] = root / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps({"text": d}) + "\n" for d in part))
    return out


def _run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("collapsewatch: error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _build(inputs, out: Path, capsys) -> tuple[int, str, str]:
    return _run(["reference", "build", inputs["reference"], "--name", "ref", "-o", out,
                 "--band-sizes", "", "--replicates", "20"], capsys)


def test_a_configured_model_that_does_not_load_is_a_one_line_error(
        inputs, tmp_path, capsys, embedding_env):
    out = tmp_path / "ref.cwp"
    embedding_env(tmp_path / "missing.onnx", tmp_path / "tokenizer.json")
    code, _, err = _build(inputs, out, capsys)
    assert code == 2
    _one_line_error(err, "COLLAPSEWATCH_EMBEDDING_MODEL", "missing.onnx", "does not exist")
    assert not out.exists()
    # a model without its tokenizer is refused the same way, when scoring too
    embedding_env(None, None)
    assert _build(inputs, out, capsys)[0] == 0
    embedding_env(tmp_path / "missing.onnx", None)
    code, _, err = _run(["score", "--reference", out, inputs["window"]], capsys)
    assert code == 2
    _one_line_error(err, "COLLAPSEWATCH_EMBEDDING_MODEL", "tokenizer")


def test_reference_build_and_score_use_the_configured_model(
        inputs, renamed_model, tmp_path, capsys, embedding_env):
    import metrics

    out = tmp_path / "ref.cwp"
    embedding_env(*renamed_model)
    code, _, err = _build(inputs, out, capsys)
    assert code == 0, err
    identity = metrics.Profile.from_bytes(out.read_bytes()).semantic.identity
    assert identity.startswith("renamed:"), identity

    code, stdout, err = _run(["score", "--reference", out, inputs["window"]], capsys)
    assert code == 0, err
    score = json.loads(stdout)
    assert "semantic" not in score, score.get("semantic")  # embedded: no "unavailable"
    assert score["metrics"]["semantic_similarity"]["value"] is not None

    # the same reference scored with the default model: its vectors are not comparable by
    # identity, so the semantic metrics say why they are unavailable
    embedding_env(None, None)
    code, stdout, err = _run(["score", "--reference", out, inputs["window"]], capsys)
    assert code == 0, err
    score = json.loads(stdout)
    assert score["semantic"].startswith("unavailable (") and "renamed:" in score["semantic"]
    assert score["metrics"]["semantic_similarity"]["value"] is None


def test_score_reports_rare_topic_probe_answers_from_jsonl_attributes(
        inputs, tmp_path, capsys, embedding_env, human_documents):
    embedding_env(None, None)
    ref = tmp_path / "ref.cwp"
    assert _build(inputs, ref, capsys)[0] == 0
    docs = human_documents[-120:]
    window = tmp_path / "probes.jsonl"
    lines = [{"text": d} for d in docs[:100]]
    lines += [{"text": d, "attributes": {"rare_topic": True, "topic": "linguistics"}}
              for d in docs[100:106]]
    lines += [{"text": docs[106], "attributes": {"rare_topic": False, "topic": "linguistics"}},
              {"text": docs[107], "attributes": {"rare_topic": True}}]
    window.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, stdout, err = _run(["score", "--reference", ref, window], capsys)
    assert code == 0, err
    by = {e["probe_topic"]: e for e in json.loads(stdout)["evidence"]["probe_topics"]}
    assert (by["linguistics"]["answers"], by["rare topics"]["answers"]) == (6, 1)
    assert by["linguistics"]["on_topic"] is None  # no baseline answers offline
    assert sum(t["answers"] for t in by["linguistics"]["landed"]) <= 6
    code, stdout, _ = _run(["score", "--reference", ref, window, "--format", "table"], capsys)
    assert "rare-topic probes" in stdout and "linguistics probes: 6 answers" in stdout
    # a window without probe answers has no probe evidence
    code, stdout, _ = _run(["score", "--reference", ref, inputs["window"]], capsys)
    assert "probe_topics" not in json.loads(stdout)["evidence"]
