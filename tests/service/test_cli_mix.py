"""collapsewatch mix estimate / mix filter (offline CLI)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import metrics
from metrics.synthetic import NGramModel
from service.cli import main

# its module fixtures embed and score thousands of documents
pytestmark = pytest.mark.slow


def _jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs)))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, human_documents):
    work = tmp_path_factory.mktemp("mix")
    order = list(range(len(human_documents)))
    random.Random(9).shuffle(order)
    docs = [human_documents[i] for i in order]
    reference = metrics.build_reference(docs[:3000], "fortunes",
                                        config=metrics.ReferenceConfig(replicates=10))
    generator = NGramModel.train(docs[3000:5000])
    baseline = metrics.build_baseline(generator.sample(800, seed=1), reference, "trigram")
    metrics.save_profile(reference, work / "ref.cwp")
    metrics.save_profile(baseline, work / "gen.cwp")
    human, synthetic = docs[5000:5280], generator.sample(120, seed=2)
    window = _jsonl(work / "window.jsonl", synthetic + human)
    return {"dir": work, "ref": work / "ref.cwp", "src": work / "gen.cwp", "window": window,
            "synthetic": len(synthetic), "human": len(human)}


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_estimate_prints_the_synthetic_share_json(files, capsys):
    code, out, _ = run(["mix", "estimate", "--reference", files["ref"], "--source", files["src"],
                        files["window"], "--bootstrap", "50"], capsys)
    assert code == 0
    result = json.loads(out)
    share = result["synthetic_share"]
    assert result["documents"] == files["synthetic"] + files["human"]
    assert set(share) == {"estimate", "low", "high", "by_source", "unexplained", "scores"}
    assert share["scores"] == "lexical"
    assert set(share["by_source"]) == {"trigram"}
    assert share["low"] <= share["estimate"] <= share["high"]
    truth = files["synthetic"] / result["documents"]
    assert abs(share["estimate"] - truth) < 0.15


def test_joined_gives_both_estimators_as_streams_get_them(files, capsys):
    argv = ["mix", "estimate", "--reference", files["ref"], "--source", files["src"],
            files["window"], "--bootstrap", "50"]
    parts = {}
    for flag, scores in (([], "lexical"), (["--semantic"], "lexical+semantic")):
        code, out, _ = run(argv + flag, capsys)
        assert code == 0
        parts[scores] = json.loads(out)["synthetic_share"]
    code, out, _ = run(argv + ["--joined"], capsys)
    assert code == 0
    result = json.loads(out)
    share = result["synthetic_share"]
    assert share["scores"] == "joined" and result["documents"] == 400
    assert {k: v["estimate"] for k, v in share["parts"].items()} == \
        {k: v["estimate"] for k, v in parts.items()}
    assert share["estimate"] == pytest.approx(
        sum(p["estimate"] for p in parts.values()) / 2, abs=1e-4)
    assert share["low"] == min(p["low"] for p in parts.values())
    assert share["high"] == max(p["high"] for p in parts.values())
    code, out, _ = run(argv + ["--joined", "--format", "table"], capsys)
    assert code == 0 and "scored by joined scores" in out and "lexical+semantic:" in out
    code, _, err = run(argv + ["--joined", "--semantic"], capsys)
    assert code == 2 and err.strip() == ("collapsewatch: error: --joined estimates with and "
                                         "without the embedding score; drop --semantic")


def test_semantic_scores_documents_by_their_embeddings_too(files, capsys, tmp_path,
                                                          human_documents):
    code, out, _ = run(["mix", "estimate", "--reference", files["ref"], "--source", files["src"],
                        files["window"], "--bootstrap", "50", "--semantic"], capsys)
    assert code == 0
    share = json.loads(out)["synthetic_share"]
    assert share["scores"] == "lexical+semantic"
    truth = files["synthetic"] / (files["synthetic"] + files["human"])
    assert abs(share["estimate"] - truth) < 0.15
    code, out, _ = run(["mix", "filter", "--reference", files["ref"], "--source", files["src"],
                        files["window"], "--max-synthetic", "0.1", "--semantic",
                        "--kept", tmp_path / "kept.jsonl"], capsys)
    assert code == 0 and out.startswith("kept ")
    # a reference without embeddings: one line, exit 2
    lexical = metrics.build_reference(human_documents[-1000:], "plain", embedder=None,
                                      config=metrics.ReferenceConfig(replicates=5))
    metrics.save_profile(lexical, tmp_path / "plain.cwp")
    base = metrics.build_baseline(human_documents[:300], lexical, "g", embedder=None)
    metrics.save_profile(base, tmp_path / "g.cwp")
    code, _, err = run(["mix", "estimate", "--reference", tmp_path / "plain.cwp",
                        "--source", tmp_path / "g.cwp", files["window"], "--semantic"], capsys)
    assert code == 2 and "reference built with embeddings" in err and len(err.splitlines()) == 1


def test_estimate_table_names_the_sources_and_the_interval(files, capsys):
    code, out, _ = run(["mix", "estimate", "--reference", files["ref"], "--source", files["src"],
                        files["window"], "--format", "table", "--bootstrap", "20"], capsys)
    assert code == 0
    assert "synthetic" in out and "trigram" in out and "95% interval" in out
    assert "unexplained" in out and "human" in out


def test_filter_writes_kept_and_dropped_input_lines_unchanged(files, capsys):
    kept, dropped = files["dir"] / "kept.jsonl", files["dir"] / "dropped.jsonl"
    code, out, _ = run(["mix", "filter", "--reference", files["ref"], "--source", files["src"],
                        files["window"], "--max-synthetic", "0.1", "--kept", kept,
                        "--dropped", dropped, "--bootstrap", "0"], capsys)
    assert code == 0
    kept_rows = [json.loads(line) for line in kept.read_text().splitlines()]
    dropped_rows = [json.loads(line) for line in dropped.read_text().splitlines()]
    total = files["synthetic"] + files["human"]
    assert len(kept_rows) + len(dropped_rows) == total
    ids = sorted(r["id"] for r in kept_rows + dropped_rows)
    assert ids == list(range(total))  # every line lands in exactly one file, id field kept
    assert f"dropped {len(dropped_rows)}" in out and "expected synthetic share" in out
    # the first rows of the window are the synthetic ones: most of them are dropped
    dropped_synthetic = sum(r["id"] < files["synthetic"] for r in dropped_rows)
    assert dropped_synthetic > 0.5 * files["synthetic"]
    assert dropped_synthetic / len(dropped_rows) > files["synthetic"] / total


def test_filter_reads_text_files_and_writes_json_lines(files, capsys, tmp_path):
    txt = tmp_path / "in.txt"
    lines = [json.loads(line)["text"].replace("\n", " ") for line in
             files["window"].read_text().splitlines()]
    txt.write_text("\n".join(lines) + "\n")
    kept = tmp_path / "kept.jsonl"
    code, _, _ = run(["mix", "filter", "--reference", files["ref"], "--source", files["src"], txt,
                      "--max-synthetic", "0.2", "--kept", kept, "--bootstrap", "0"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in kept.read_text().splitlines()]
    assert rows and all(set(r) == {"text"} and r["text"] in lines for r in rows)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["estimate", "--reference", "{src}", "--source", "{src}", "{window}"], "not a reference"),
        (["estimate", "--reference", "{ref}", "--source", "{ref}", "{window}"], "baseline files"),
        (["estimate", "--reference", "{ref}", "--source", "{dir}/nope.cwp", "{window}"],
         "does not exist"),
        (["estimate", "--reference", "{ref}", "--source", "{src}", "{dir}/bad.jsonl"],
         "not valid JSON"),
        (["estimate", "--reference", "{ref}", "--source", "{src}", "{dir}/empty.jsonl"],
         "no documents"),
        (["estimate", "--reference", "{window}", "--source", "{src}", "{window}"],
         "not a collapsewatch profile"),
        (["filter", "--reference", "{ref}", "--source", "{src}", "{window}", "--max-synthetic",
          "1.5", "--kept", "{dir}/k.jsonl"], "between 0 and 1"),
        (["filter", "--reference", "{ref}", "--source", "{src}", "{window}", "--max-synthetic",
          "0.1", "--kept", "{window}"], "overwrite the input"),
        (["filter", "--reference", "{ref}", "--source", "{src}", "{window}", "--max-synthetic",
          "0.1", "--kept", "{dir}/missing/k.jsonl"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(files, capsys, argv, message):
    (files["dir"] / "bad.jsonl").write_text('{"text": "fine"}\nnot json\n')
    (files["dir"] / "empty.jsonl").write_text("\n")
    before = files["window"].read_bytes()
    args = ["mix"] + [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    code, _, err = run(args, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("collapsewatch: error:")
    assert message in err
    assert files["window"].read_bytes() == before  # nothing the user had is lost
