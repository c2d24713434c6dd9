"""Evidence lists find what was planted in human text the scorer has not seen, and little else.

Reference: the shared 3,000-fortune reference. Baseline: 6,000 other fortunes. Windows: drawn
from the remaining ~6,200 fortunes, which neither profile has seen.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

import metrics
from metrics.evidence import (
    duplicate_groups,
    evidence,
    without_text,
)
from metrics.sample import Sample
from metrics.scoring import encode_window_texts
from metrics.synthetic import recursive_generations
from tests.support.planting import remove_tail_words

# its module fixtures embed and score thousands of documents
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def split(human_documents) -> tuple[list[str], list[str]]:
    """(baseline documents, unseen documents), disjoint from the reference's 3,000
    (the same seeded order as tests/metrics/conftest.py)."""
    order = list(range(len(human_documents)))
    random.Random(7).shuffle(order)
    baseline = [human_documents[i] for i in order[6000:12000]]
    unseen = [human_documents[i] for i in order[3000:6000] + order[12000:]]
    return baseline, unseen


@pytest.fixture(scope="module")
def baseline(split, small_reference) -> metrics.Profile:
    return metrics.build_baseline(split[0], small_reference, "fortunes-baseline")


def _window(docs: list[str], reference: metrics.Profile) -> tuple[Sample, list[str]]:
    corpus, keys, texts = encode_window_texts(docs, reference)
    return Sample(corpus, int(corpus.offsets[-1]), keys), texts


def _evidence(docs, reference, baseline=None, **kwargs) -> dict:
    sample, texts = _window(docs, reference)
    return evidence(sample, reference, baseline, texts=texts, **kwargs)


def _draw(unseen: list[str], size: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [unseen[i] for i in rng.choice(len(unseen), size, replace=False)]


# ------------------------------------------------------------------ overrepresented


@pytest.mark.parametrize("phrase", ["i hope this helps", "delve into", "in conclusion it is"])
def test_a_phrase_planted_in_a_fifth_of_documents_is_the_first_overrepresented_entry(
    phrase, split, small_reference, baseline
):
    docs = _draw(split[1], 500, seed=11)
    rng = np.random.default_rng(12)
    for i in rng.choice(len(docs), len(docs) // 5, replace=False):
        words = docs[i].split(" ")
        at = int(rng.integers(0, len(words) + 1))
        docs[i] = " ".join(words[:at] + [phrase] + words[at:])
    for against in (baseline, None):
        entries = _evidence(docs, small_reference, against)["overrepresented"]
        assert entries and entries[0]["ngram"] == phrase, entries[:3]
        first = entries[0]
        assert first["z"] >= 3 and first["window_per_10k"] > first["baseline_per_10k"]


def test_fresh_human_windows_have_no_overrepresented_entry(split, small_reference, baseline):
    """Under no change an entry should be rare: at most 5% of windows may list one."""
    windows = [_draw(split[1], size, seed) for seed, size in enumerate([500] * 30 + [2000] * 6)]
    with_entry = [
        i for i, docs in enumerate(windows)
        if _evidence(docs, small_reference, baseline)["overrepresented"]
    ]
    assert len(with_entry) <= 0.05 * len(windows), with_entry
    # against the human reference (no baseline) as well
    listed = sum(
        bool(_evidence(docs, small_reference)["overrepresented"]) for docs in windows[:10]
    )
    assert listed == 0


def test_a_word_repeated_inside_one_document_is_not_overrepresented(
    split, small_reference, baseline
):
    """Documents are the units: one document saying a word forty times is one observation."""
    docs = _draw(split[1], 500, seed=21)
    docs[0] = docs[0] + " " + " ".join(["marmalade"] * 40)
    entries = _evidence(docs, small_reference, baseline)["overrepresented"]
    assert "marmalade" not in {e["ngram"] for e in entries}


# ------------------------------------------------------------------ vanished


def _remove_words(seed: int, split, reference, baseline) -> tuple[list[str], dict]:
    """Drop every document of a 1,000-document window holding one of 30 words expected >= 5
    times in what remains (tests/support/planting.py). Returns (chosen, vanished by term)."""
    kept, chosen = remove_tail_words(_draw(split[1], 1000, seed), reference, baseline, seed)
    kept_sample, texts = _window(kept, reference)
    ev = evidence(kept_sample, reference, baseline, texts=texts)
    return chosen, {v["term"]: v for v in ev["vanished"]}


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_removed_words_are_listed_as_vanished(seed, split, small_reference, baseline):
    chosen, vanished = _remove_words(seed, split, small_reference, baseline)
    found = [w for w in chosen if w in vanished]
    print(f"seed {seed}: {len(found)} of 30 removed words listed as vanished")
    assert len(found) >= 25, sorted(set(chosen) - set(found))
    for w in found:
        assert vanished[w]["observed"] == 0 and vanished[w]["expected"] >= 5


def test_fresh_windows_list_few_vanished_terms(split, small_reference, baseline):
    counts = [
        len(_evidence(_draw(split[1], 1000, seed), small_reference, baseline)["vanished"])
        for seed in range(40, 50)
    ]
    print(f"vanished terms in fresh 1,000-document windows: mean {np.mean(counts):.1f}, {counts}")
    # each listed term has <= 1.8% chance of being listed under no change; a fresh window
    # tests a few hundred, so a handful is expected -- but not a full list
    assert np.mean(counts) <= 10


# ------------------------------------------------------------------ duplicates


def test_near_duplicate_groups_have_the_planted_sizes(split, small_reference, baseline):
    """10% of the window are edited copies (case, punctuation, a word added or dropped at
    an end: Jaccard of 5-word shingles stays >= 0.8) in groups of 2 to 5."""
    window = _draw(split[1], 900, seed=51)
    in_window = set(window)
    sources = [d for d in split[1] if len(d.split()) >= 25 and d not in in_window]
    planted: list[list[str]] = []
    sizes = [5, 4, 3, 3, 2] * 10
    while sum(len(g) for g in planted) < 100:
        src = sources[len(planted)]
        edits = [src.upper(), src + " Indeed.", src.rsplit(" ", 1)[0],
                 src.replace(",", ";") + " ok", "So, " + src]
        planted.append([src, *edits[: sizes[len(planted)] - 1]])
    docs = window + [t for g in planted for t in g]
    sample, texts = _window(docs, small_reference)
    labels = duplicate_groups(sample, small_reference.context())
    position = {t: i for i, t in enumerate(texts)}
    for group in planted:
        group_labels = {labels[position[metrics.normalize_documents([t])[0]]] for t in group}
        assert len(group_labels) == 1 and -1 not in group_labels
        assert (labels == group_labels.pop()).sum() == len(group)
    listed = evidence(sample, small_reference, baseline, texts=texts)["duplicates"]
    assert [g["size"] for g in listed] == sorted((len(g) for g in planted), reverse=True)[:5]
    for g in listed:
        assert g["share"] == pytest.approx(g["size"] / len(docs), abs=1e-4)
        assert len(g["examples"]) == 2 and g["examples"][0] != g["examples"][1]
        assert all(len(t) <= 200 for t in g["examples"])


# ------------------------------------------------------------------ examples, shape, privacy


def test_most_typical_examples_read_likelier_than_least_typical(split, small_reference):
    ex = _evidence(_draw(split[1], 300, seed=61), small_reference)["examples"]
    assert len(ex["most_typical"]) == 3 and len(ex["least_typical"]) == 3
    assert max(e["nll"] for e in ex["most_typical"]) < min(e["nll"] for e in ex["least_typical"])
    for e in ex["most_typical"] + ex["least_typical"]:
        assert 0.0 <= e["human_percentile"] <= 1.0 and len(e["text"]) <= 200


def test_a_collapsed_window_gives_bounded_evidence(split, small_reference, baseline):
    gens = recursive_generations(split[1][:2000], generations=5, seed=3)
    docs = gens[5].model.sample(2000, seed=4, temperature=0.5)
    ev = _evidence(docs, small_reference, baseline)
    assert 0 < len(ev["overrepresented"]) <= 20 and len(ev["vanished"]) <= 30
    assert all(e["z"] >= 3 for e in ev["overrepresented"])
    assert len(ev["duplicates"]) <= 5
    size = len(json.dumps(ev, allow_nan=False).encode("utf-8"))
    print(f"evidence of a collapsed 2,000-document window: {size} bytes")
    assert size <= 8 * 1024


def test_quoted_text_can_be_left_out(split, small_reference, baseline):
    docs = _draw(split[1], 200, seed=71)
    docs += [docs[0]] * 5
    full = _evidence(docs, small_reference, baseline)
    bare = _evidence(docs, small_reference, baseline, quote_text=False)
    assert full["duplicates"][0]["examples"] and bare["duplicates"][0]["examples"] == []
    assert bare["duplicates"][0]["size"] == full["duplicates"][0]["size"]
    assert bare["examples"] == {"most_typical": [], "least_typical": []}
    assert bare == without_text(full)
    quoted = {t for g in full["duplicates"] for t in g["examples"]}
    assert not any(t in json.dumps(bare) for t in quoted)


@pytest.mark.parametrize("docs", [[], [""], ["one document"], ["a b c"] * 3])
def test_tiny_windows_give_empty_lists(docs, small_reference, baseline):
    ev = _evidence(docs, small_reference, baseline)
    assert ev["overrepresented"] == []
    assert json.loads(json.dumps(ev, allow_nan=False)) == ev


def test_score_json_carries_evidence(split, small_reference, fast_score_config):
    docs = _draw(split[1], 120, seed=81)
    result = metrics.score(docs, small_reference, config=fast_score_config)
    ev = result["evidence"]
    assert ev["against"] == "reference"
    assert {"overrepresented", "vanished", "duplicates", "examples"} <= set(ev)
    bare = metrics.score(docs, small_reference, config=fast_score_config, evidence_text=False)
    assert bare["evidence"]["examples"] == {"most_typical": [], "least_typical": []}
    off = metrics.score(docs, small_reference, config=fast_score_config, with_evidence=False)
    assert "overrepresented" not in off.get("evidence", {})
