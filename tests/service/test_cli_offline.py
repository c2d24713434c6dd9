"""collapsewatch reference build / score / baseline build (offline CLI)."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import main
from tests.support import VENV_BIN


def _write_jsonl(path: Path, docs, field="text") -> Path:
    path.write_text("\n".join(json.dumps({field: d, "id": i}) for i, d in enumerate(docs)) + "\n")
    return path


def _write_csv(path: Path, docs, field="text") -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", field])
        w.writerows([i, d] for i, d in enumerate(docs))
    return path


@pytest.fixture(scope="module")
def corpus(human_documents):
    order = list(range(len(human_documents)))
    random.Random(5).shuffle(order)
    docs = [human_documents[i] for i in order]
    return {"reference": docs[:400], "window": docs[400:480], "model": docs[500:760]}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def reference_file(workdir, corpus) -> Path:
    src = _write_jsonl(workdir / "ref.jsonl", corpus["reference"])
    out = workdir / "ref.cwp"
    assert main(["reference", "build", str(src), "--name", "fortunes", "-o", str(out),
                 "--band-sizes", "80", "--replicates", "40"]) == 0
    return out


@pytest.fixture(scope="module")
def window_file(workdir, corpus) -> Path:
    return _write_jsonl(workdir / "window.jsonl", corpus["window"])


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _bad(argv, capsys, message: str) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("collapsewatch: error:"), err
    assert message in lines[0], lines[0]


# ---------------------------------------------------------------- reference build


def test_reference_build_reports_the_profile(reference_file, corpus, capsys):
    import metrics

    profile = metrics.load_profile(reference_file)
    assert profile.name == "fortunes" and profile.document_count == 400
    assert profile.sha256 == metrics.documents_sha256(metrics.normalize_documents(corpus["reference"]))
    assert {n for n, _ in profile.stored_bands} == {80}
    assert profile.config.replicates == 40


def test_all_input_formats_give_the_same_reference(workdir, corpus, capsys, monkeypatch):
    docs = [d.replace("\n", " ") for d in corpus["reference"][:250]]  # .txt: one per line
    inputs = {
        "jsonl": _write_jsonl(workdir / "f.jsonl", docs, field="body"),
        "csv": _write_csv(workdir / "f.csv", docs, field="body"),
        "txt": workdir / "f.txt",
    }
    inputs["txt"].write_text("\n\n".join(docs) + "\n")  # blank lines are skipped
    shas = set()
    for kind, path in inputs.items():
        code, out, _ = run(["reference", "build", path, "--field", "body", "--name", "x",
                            "-o", workdir / f"{kind}.cwp", "--band-sizes", ""], capsys)
        assert code == 0, out
        shas.add(out.split("sha256 ")[1].split(",")[0])
    stdin = io.TextIOWrapper(io.BytesIO(inputs["jsonl"].read_bytes()))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, _ = run(["reference", "build", "-", "--field", "body", "--name", "x",
                        "-o", workdir / "stdin.cwp", "--band-sizes", ""], capsys)
    assert code == 0
    shas.add(out.split("sha256 ")[1].split(",")[0])
    assert len(shas) == 1


def test_several_inputs_are_concatenated(workdir, corpus, capsys):
    a = _write_jsonl(workdir / "a.jsonl", corpus["reference"][:150])
    b = _write_jsonl(workdir / "b.jsonl", corpus["reference"][150:300])
    code, out, _ = run(["reference", "build", a, b, "--name", "ab", "-o", workdir / "ab.cwp",
                        "--band-sizes", ""], capsys)
    assert code == 0 and "300 documents" in out


# ---------------------------------------------------------------- score


def test_score_prints_the_score_json(reference_file, window_file, capsys):
    code, out, _ = run(["score", "--reference", reference_file, window_file], capsys)
    result = json.loads(out)
    assert code == 0
    assert result["documents"] == 80 and result["baseline"] is None
    assert result["health"] in ("healthy", "early_collapse", "collapse")
    assert set(result["signals"]) == {"diversity", "tail_coverage", "sameness"}


def test_score_table_is_readable(reference_file, window_file, capsys):
    code, out, _ = run(["score", "--reference", reference_file, window_file, "--format", "table"],
                       capsys)
    assert code == 0
    assert "health" in out and "distinct_2" in out and "human band" in out
    assert "! = outside the human band" in out


def test_fail_on_sets_the_exit_code(reference_file, workdir, window_file, capsys):
    degenerate = _write_jsonl(workdir / "degenerate.jsonl", ["the same answer every time"] * 80)
    code, out, _ = run(["score", "--reference", reference_file, degenerate, "--fail-on", "collapse"],
                       capsys)
    assert json.loads(out)["health"] == "collapse" and code == 1
    assert run(["score", "--reference", reference_file, degenerate], capsys)[0] == 0
    assert run(["score", "--reference", reference_file, degenerate,
                "--fail-on", "early_collapse"], capsys)[0] == 1
    code, out, _ = run(["score", "--reference", reference_file, window_file,
                        "--fail-on", "early_collapse"], capsys)
    health = json.loads(out)["health"]
    assert code == (1 if health in ("early_collapse", "collapse") else 0)


def test_small_window_is_insufficient_data_not_an_error(reference_file, workdir, capsys):
    small = _write_jsonl(workdir / "small.jsonl", ["just a few", "outputs here"])
    code, out, _ = run(["score", "--reference", reference_file, small, "--fail-on", "early_collapse"],
                       capsys)
    assert code == 0 and json.loads(out)["health"] == "insufficient_data"


# ---------------------------------------------------------------- baseline


def test_baseline_build_and_score_with_baseline(reference_file, workdir, corpus, window_file, capsys):
    src = _write_jsonl(workdir / "model.jsonl", corpus["model"])
    out_file = workdir / "base.cwp"
    code, out, _ = run(["baseline", "build", src, "--reference", reference_file, "--name", "v1",
                        "-o", out_file], capsys)
    assert code == 0
    assert "x human" in out and "diversity" in out and "tail_coverage" in out
    code, out, _ = run(["score", "--reference", reference_file, "--baseline", out_file, window_file],
                       capsys)
    result = json.loads(out)
    assert code == 0
    assert result["baseline"]["name"] == "v1"
    assert "baseline_ratio" in result["signals"]["sameness"]
    code, out, _ = run(["score", "--reference", reference_file, "--baseline", out_file, window_file,
                        "--format", "table"], capsys)
    assert "vs baseline" in out


def test_baseline_smaller_than_the_minimum(reference_file, workdir, corpus, capsys):
    src = _write_jsonl(workdir / "few.jsonl", corpus["model"][:50])
    out_file = workdir / "few.cwp"
    _bad(["baseline", "build", src, "--reference", reference_file, "--name", "few", "-o", out_file],
         capsys, "has 50 documents; at least 200")
    assert not out_file.exists()


def test_baseline_built_against_another_reference(reference_file, workdir, corpus, window_file, capsys):
    other_src = _write_jsonl(workdir / "other.jsonl", corpus["model"])
    other_ref = workdir / "other-ref.cwp"
    assert run(["reference", "build", other_src, "--name", "other", "-o", other_ref,
                "--band-sizes", "", "--replicates", "10"], capsys)[0] == 0
    base = workdir / "other-base.cwp"
    assert run(["baseline", "build", _write_jsonl(workdir / "m2.jsonl", corpus["reference"][:220]),
                "--reference", other_ref, "--name", "b", "-o", base], capsys)[0] == 0
    _bad(["score", "--reference", reference_file, "--baseline", base, window_file], capsys,
         "was built against reference")


# ---------------------------------------------------------------- bad input


def test_missing_input_file(reference_file, workdir, capsys):
    _bad(["score", "--reference", reference_file, workdir / "nope.jsonl"], capsys, "does not exist")


def test_unsupported_extension(reference_file, workdir, capsys):
    path = workdir / "data.parquet"
    path.write_text("x")
    _bad(["score", "--reference", reference_file, path], capsys, "unsupported input format")


def test_no_documents(reference_file, workdir, capsys):
    empty = workdir / "empty.txt"
    empty.write_text("\n\n  \n")
    _bad(["score", "--reference", reference_file, empty], capsys, "no documents")


def test_unknown_jsonl_field(reference_file, window_file, capsys):
    _bad(["score", "--reference", reference_file, window_file, "--field", "content"], capsys,
         "no field 'content'")


def test_unknown_csv_column(reference_file, workdir, capsys):
    path = _write_csv(workdir / "w.csv", ["a b c"] * 60)
    _bad(["score", "--reference", reference_file, path, "--field", "body"], capsys, "no column 'body'")


def test_non_utf8_input(reference_file, workdir, capsys):
    path = workdir / "latin1.txt"
    path.write_bytes("caf\u00e9 cr\u00e8me\n".encode("latin-1") * 60)
    _bad(["score", "--reference", reference_file, path], capsys, "not valid UTF-8")


def test_invalid_json_line(reference_file, workdir, capsys):
    path = workdir / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{"text": broken\n')
    _bad(["score", "--reference", reference_file, path], capsys, "line 2: not valid JSON")


def test_corrupted_reference_file(reference_file, workdir, window_file, capsys):
    data = bytearray(reference_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken = workdir / "broken.cwp"
    broken.write_bytes(bytes(data))
    _bad(["score", "--reference", broken, window_file], capsys, "corrupted")


def test_reference_from_an_incompatible_version(reference_file, workdir, window_file, capsys):
    from metrics.profile import MAGIC

    data = bytearray(reference_file.read_bytes())
    data[len(MAGIC) : len(MAGIC) + 4] = (99).to_bytes(4, "little")
    old = workdir / "v99.cwp"
    old.write_bytes(bytes(data))
    _bad(["score", "--reference", old, window_file], capsys, "format version 99")


def test_missing_reference_file(workdir, window_file, capsys):
    _bad(["score", "--reference", workdir / "missing.cwp", window_file], capsys, "does not exist")


def test_reference_too_small_writes_nothing(workdir, corpus, capsys):
    src = _write_jsonl(workdir / "tiny.jsonl", corpus["reference"][:20])
    out_file = workdir / "tiny.cwp"
    _bad(["reference", "build", src, "--name", "tiny", "-o", out_file], capsys,
         "has 20 documents; at least 200")
    assert not out_file.exists()


def test_output_directory_must_exist(workdir, corpus, capsys):
    src = _write_jsonl(workdir / "r2.jsonl", corpus["reference"][:220])
    _bad(["reference", "build", src, "--name", "r", "-o", workdir / "no" / "such" / "dir.cwp",
          "--band-sizes", ""], capsys, "does not exist")


def test_real_process_exit_codes(reference_file, window_file, workdir):
    exe = str(VENV_BIN / "collapsewatch")
    ok = subprocess.run([exe, "score", "--reference", str(reference_file), str(window_file)],
                        capture_output=True, text=True, timeout=300, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["documents"] == 80
    bad = subprocess.run([exe, "score", "--reference", str(reference_file),
                          str(workdir / "absent.jsonl")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "does not exist" in bad.stderr


# ---------------------------------------------------------------- sequences of windows


@pytest.fixture(scope="module")
def sequence_files(workdir, human_documents):
    """Eight consecutive 80-document windows: three of fresh human text, then five where two
    documents repeat others of the same window (a sustained rise of sameness, ~1.2 of
    human: below the single-window size threshold of 1.5)."""
    order = list(range(len(human_documents)))
    random.Random(11).shuffle(order)
    fresh = [human_documents[i] for i in order[1000:1640]]
    files = []
    for w in range(8):
        docs = fresh[80 * w: 80 * (w + 1)]
        if w >= 3:
            docs = docs[:78] + docs[:2]
        files.append(_write_jsonl(workdir / f"seq-{w}.jsonl", docs))
    return files


def test_several_windows_give_windows_final_health_and_trend(reference_file, sequence_files,
                                                             capsys):
    import metrics
    from metrics.trend import trend, trend_health

    code, out, _ = run(["score", "--reference", reference_file, *sequence_files], capsys)
    assert code == 0
    body = json.loads(out)
    assert set(body) == {"windows", "health", "trend"}
    assert len(body["windows"]) == 8
    assert body["health"] == body["windows"][-1]["health"]
    assert body["trend"] == body["windows"][-1]["trend"]
    assert set(body["trend"]) == set(metrics.SIGNALS)
    singles = [json.loads(run(["score", "--reference", reference_file, f], capsys)[1])
               for f in sequence_files]
    # each window: its own score, the trend over the windows so far, health with it
    for i, window in enumerate(body["windows"]):
        state = trend(singles[: i + 1])
        assert window["trend"] == state
        assert window["health"] == trend_health(singles[i]["health"], state)
        assert window["signals"] == singles[i]["signals"]
    # the sustained rise of sameness is caught although no single window is flagged for it
    same = body["trend"]["sameness"]
    assert same["alarm"] and same["windows"] >= 5, same
    assert [s["health"] for s in singles] == ["healthy"] * 8
    assert body["health"] == "early_collapse"


def test_fail_on_applies_to_the_final_health_of_a_sequence(reference_file, sequence_files,
                                                           capsys):
    code, out, _ = run(["score", "--reference", reference_file, *sequence_files,
                        "--fail-on", "early_collapse"], capsys)
    assert code == 1 and json.loads(out)["health"] == "early_collapse"
    code, out, _ = run(["score", "--reference", reference_file, *sequence_files[:3],
                        "--fail-on", "early_collapse"], capsys)
    assert json.loads(out)["health"] == "healthy" and code == 0


def test_sequence_table_has_a_row_per_window_and_names_the_alarm(reference_file,
                                                                sequence_files, capsys):
    code, out, _ = run(["score", "--reference", reference_file, *sequence_files,
                        "--format", "table"], capsys)
    assert code == 0
    rows = [line for line in out.splitlines() if line[:3].strip().isdigit()]
    assert [line.split()[1] for line in rows] == [f.name for f in sequence_files]
    assert "health     EARLY_COLLAPSE" in out
    assert any(line.startswith("alarm      sameness ~") and "above human" in line
               for line in out.splitlines()), out


def test_one_file_keeps_the_single_window_output(reference_file, window_file, capsys):
    body = json.loads(run(["score", "--reference", reference_file, window_file], capsys)[1])
    assert "windows" not in body and "trend" not in body and body["documents"] == 80


def test_a_bad_file_in_a_sequence_fails_before_scoring(reference_file, sequence_files, workdir,
                                                        capsys):
    empty = workdir / "empty-window.jsonl"
    empty.write_text("")
    _bad(["score", "--reference", reference_file, *sequence_files[:2], empty], capsys,
         "no documents in")
    _bad(["score", "--reference", reference_file, "-", "-"], capsys, "only once")


# ---------------------------------------------------------------- evidence


@pytest.fixture(scope="module")
def evidence_reference(workdir, human_documents) -> Path:
    """A 2,000-fortune reference: against the 400-document one (160 calibration documents)
    a phrase the background never uses cannot reach z >= 3 after adjustment."""
    src = _write_jsonl(workdir / "ref2000.jsonl", human_documents[2000:4000])
    out = workdir / "ref2000.cwp"
    assert main(["reference", "build", str(src), "--name", "fortunes-2000", "-o", str(out),
                 "--band-sizes", "260", "--replicates", "40"]) == 0
    return out


@pytest.fixture(scope="module")
def planted_window(workdir, corpus) -> Path:
    """260 fortunes with a phrase in a fifth of the documents and one text repeated four
    times."""
    docs = list(corpus["model"])
    for i in range(0, len(docs), 5):
        docs[i] = docs[i] + " I hope this helps."
    docs[1:5] = [docs[1]] * 4
    return _write_jsonl(workdir / "planted.jsonl", docs)


def test_score_json_carries_evidence_and_the_table_prints_it(evidence_reference, planted_window,
                                                              capsys):
    code, out, _ = run(["score", "--reference", evidence_reference, planted_window], capsys)
    evidence = json.loads(out)["evidence"]
    assert code == 0 and evidence["against"] == "reference"
    assert evidence["overrepresented"][0]["ngram"] == "i hope this helps"
    assert evidence["duplicates"][0]["size"] == 4 and evidence["duplicates"][0]["examples"]
    assert len(evidence["examples"]["most_typical"]) == 3
    code, out, _ = run(["score", "--reference", evidence_reference, planted_window,
                        "--format", "table"], capsys)
    assert code == 0
    section = out[out.index("what changed (against the reference)"):]
    assert "i hope this helps" in section and "4 documents (1.5%)" in section
    assert "most typical (reference LM)" in section


def test_evidence_quotes_no_text_when_turned_off(evidence_reference, planted_window, capsys,
                                                  monkeypatch):
    from service.settings import get_settings

    code, out, _ = run(["score", "--reference", evidence_reference, planted_window,
                        "--no-evidence-text"], capsys)
    evidence = json.loads(out)["evidence"]
    assert code == 0 and evidence["duplicates"][0]["examples"] == []
    assert evidence["examples"] == {"most_typical": [], "least_typical": []}
    assert evidence["overrepresented"][0]["ngram"] == "i hope this helps"
    monkeypatch.setenv("COLLAPSEWATCH_EVIDENCE_TEXT", "off")
    get_settings.cache_clear()
    try:
        code, out, _ = run(["score", "--reference", evidence_reference, planted_window,
                            "--format", "table"], capsys)
    finally:
        get_settings.cache_clear()
    assert code == 0 and "4 documents (1.5%)" in out and "most typical" not in out
