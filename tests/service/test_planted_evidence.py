"""Planted signals are found through the service pipeline and through the CLI, as they are
by the library (tests/metrics/test_evidence.py): one window of fresh human text with a phrase
in a fifth of its documents, every document holding one of 30 tail words removed, and groups
of edited near-duplicates. Reference: 3,000 fortunes; baseline: 6,000 others; the window:
fortunes neither has seen.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

import metrics
from service.cli import main
from tests.service.api_fixtures import store_reference
from tests.service.pipeline_fixtures import add_model, evaluation, ingest, plan_now, score_now
from tests.support.planting import plant_duplicates, plant_phrase, remove_tail_words

# its module fixtures embed and score thousands of documents
pytestmark = pytest.mark.slow

PHRASE = "i hope this helps"
GROUPS = (5, 4, 3, 3, 2)


@pytest.fixture(scope="module")
def split(human_documents) -> tuple[list[str], list[str], list[str]]:
    """(reference, baseline, unseen) documents, disjoint (the metrics tests' seeded order)."""
    order = list(range(len(human_documents)))
    random.Random(7).shuffle(order)
    pick = [human_documents[i] for i in order]
    return pick[:3000], pick[6000:12000], pick[3000:6000] + pick[12000:]


@pytest.fixture(scope="module")
def profiles(split) -> tuple[metrics.Profile, metrics.Profile]:
    reference = metrics.build_reference(split[0], "fortunes-3000",
                                        config=metrics.ReferenceConfig(replicates=60))
    return reference, metrics.build_baseline(split[1], reference, "fortunes-baseline")


@pytest.fixture(scope="module")
def planted(split, profiles) -> tuple[list[str], list[str]]:
    """(window documents, the 30 removed words)."""
    reference, baseline = profiles
    unseen = split[2]
    rng = np.random.default_rng(41)
    drawn = [unseen[i] for i in rng.choice(len(unseen), 1000, replace=False)]
    kept, chosen = remove_tail_words(drawn, reference, baseline, seed=41)
    gone = set(chosen)
    in_window = set(drawn)
    tok = reference.config.tokenizer
    # duplicate sources: long, unseen, and free of the removed words (a copy would bring
    # one back)
    sources = [d for d in unseen if d not in in_window and len(d.split()) >= 25
               and not gone & set(metrics.tokenize(d, tok))][:len(GROUPS)]
    docs, _ = plant_duplicates(plant_phrase(kept, PHRASE), sources, GROUPS)
    return docs, chosen


def _check(evidence: dict, chosen: list[str]) -> None:
    assert evidence["against"] == "baseline"
    assert evidence["overrepresented"][0]["ngram"] == PHRASE
    vanished = {v["term"] for v in evidence["vanished"]}
    found = [w for w in chosen if w in vanished]
    print(f"{len(found)} of 30 removed words listed as vanished")
    assert len(found) >= 25, sorted(set(chosen) - vanished)
    assert [g["size"] for g in evidence["duplicates"]] == sorted(GROUPS, reverse=True)


def test_planted_signals_are_found_through_the_pipeline(pipeline_env, profiles, planted,
                                                         split):
    from service.domain.baselines import pin_profile
    from service.domain.db import session_scope

    reference, baseline = profiles
    docs, chosen = planted
    ref = store_reference(reference, split[0])
    model_id = add_model("planted", ref, size=len(docs))
    with session_scope() as s:
        pin_profile(s, model_id, baseline, source="upload", actor="test")
    ingest("planted", docs)
    (evaluation_id,) = plan_now()
    assert score_now(evaluation_id).status == "done"
    _check(evaluation(evaluation_id).result["evidence"], chosen)


def test_planted_signals_are_found_through_the_cli(tmp_path, profiles, planted, capsys,
                                                    monkeypatch):
    monkeypatch.setenv("COLLAPSEWATCH_BAND_CACHE_DIR", "off")
    reference, baseline = profiles
    docs, chosen = planted
    metrics.save_profile(reference, tmp_path / "ref.cwp")
    metrics.save_profile(baseline, tmp_path / "base.cwp")
    window = tmp_path / "window.jsonl"
    window.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    code = main(["score", "--reference", str(tmp_path / "ref.cwp"), "--baseline",
                 str(tmp_path / "base.cwp"), str(window), "--format", "json"])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    _check(json.loads(out)["evidence"], chosen)
