"""Rare-topic probes per probe topic: where the answers land among the reference topics and
whether they still land where the baseline's answers to the same probes landed."""

from __future__ import annotations

import numpy as np
import pytest

import metrics
from metrics import semantic as S

NAMES = ("grammar verbs", "ships sea", "cats dogs", "money bank")


def _near(centroids: np.ndarray, topic: int, n: int, rng: np.random.Generator) -> np.ndarray:
    x = centroids[topic] + 0.05 * rng.standard_normal((n, centroids.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_landing_counts_answers_still_in_the_baselines_topic():
    rng = np.random.default_rng(0)
    centroids = np.eye(4, 8, dtype=np.float32)
    baseline = {"linguistics": np.vstack([_near(centroids, 0, 9, rng),
                                          _near(centroids, 2, 1, rng)])}
    window = {"linguistics": np.vstack([_near(centroids, 0, 2, rng),
                                        _near(centroids, 2, 8, rng)])}
    (entry,) = S.probe_landing(window, centroids, NAMES, baseline)
    assert entry["home_topics"] == ["grammar verbs"]
    assert (entry["on_topic"], entry["answers"]) == (2, 10)
    assert (entry["baseline_on_topic"], entry["baseline_answers"]) == (9, 10)
    assert entry["landed"] == [{"topic": "cats dogs", "answers": 8},
                               {"topic": "grammar verbs", "answers": 2}]
    assert S.describe_probe(entry) == (
        "linguistics probes: 2/10 answers still on topic (baseline 9/10)")


def test_a_home_split_over_two_topics_keeps_both_and_worst_probes_come_first():
    rng = np.random.default_rng(1)
    centroids = np.eye(4, 8, dtype=np.float32)
    baseline = {"sailing": np.vstack([_near(centroids, 1, 5, rng), _near(centroids, 3, 4, rng),
                                      _near(centroids, 0, 1, rng)]),
                "pets": _near(centroids, 2, 6, rng)}
    window = {"sailing": np.vstack([_near(centroids, 1, 3, rng), _near(centroids, 3, 3, rng)]),
              "pets": _near(centroids, 0, 4, rng),
              "unseen": _near(centroids, 3, 2, rng)}
    entries = S.probe_landing(window, centroids, NAMES, baseline)
    assert [e["probe_topic"] for e in entries] == ["pets", "sailing", "unseen"]
    pets, sailing, unseen = entries
    assert (pets["on_topic"], pets["on_topic_share"]) == (0, 0.0)
    # ships alone holds half of the baseline's answers: money (4 of 10) is not home
    assert sailing["home_topics"] == ["ships sea"] and sailing["on_topic"] == 3
    # a probe topic the baseline never asked: reported, not compared
    assert unseen["home_topics"] is None and unseen["on_topic"] is None
    assert "no baseline answers" in S.describe_probe(unseen)


def test_landing_ignores_the_order_of_answers():
    rng = np.random.default_rng(2)
    centroids = np.eye(4, 8, dtype=np.float32)
    base = {"p": np.vstack([_near(centroids, 0, 6, rng), _near(centroids, 1, 4, rng)])}
    win = {"p": np.vstack([_near(centroids, 0, 3, rng), _near(centroids, 3, 5, rng)])}
    flipped = {"p": win["p"][::-1]}
    assert S.probe_landing(win, centroids, NAMES, base) == S.probe_landing(
        flipped, centroids, NAMES, {"p": base["p"][::-1]})


def test_planted_probe_answers_drifting_off_their_topic_are_reported(small_reference,
                                                                     fortune_split):
    """Real text and the real embedder: baseline answers to "linguistics" probes are held-out
    fortunes of one reference topic; in the window 8 of 10 answers come from another topic."""
    sem = small_reference.semantic
    held = fortune_split[1][:600]
    vectors = S.embed_probe_answers([("x", d) for d in held], small_reference)["x"]
    # embed_probe_answers leaves out answers without a word: label the ones it kept
    kept = [d for d in held if metrics.tokenize(d)]
    assert len(kept) == len(vectors)
    labels = np.argmax(vectors @ sem.centroids.T, axis=1)
    counts = np.bincount(labels, minlength=len(sem.centroids))
    a, b = np.argsort(-counts, kind="stable")[:2]
    of = {t: [d for d, label in zip(kept, labels) if label == t] for t in (a, b)}
    assert len(of[a]) >= 10 and len(of[b]) >= 8
    baseline = [("linguistics", d) for d in of[a][:10]]
    window = [("linguistics", d) for d in of[a][10:12] + of[b][:8]]
    window += [("sailing", d) for d in of[b][8:11]]
    entries = S.probe_topics(small_reference, window, baseline)
    by = {e["probe_topic"]: e for e in entries}
    ling = by["linguistics"]
    assert ling["home_topics"] == [sem.names[a]]
    assert (ling["on_topic"], ling["answers"], ling["baseline_on_topic"]) == (2, 10, 10)
    assert ling["summary"] == "linguistics probes: 2/10 answers still on topic (baseline 10/10)"
    assert ling["landed"][0] == {"topic": sem.names[b], "answers": 8}
    assert by["sailing"]["on_topic"] is None  # no baseline answers to compare


def test_no_probe_answers_or_no_model_gives_no_probe_evidence(small_reference):
    assert S.probe_topics(small_reference, []) is None

    class Lexical:
        semantic = None

    assert S.probe_topics(Lexical(), [("p", "some text")]) is None


@pytest.mark.parametrize("answers", [[("p", "")], [("p", "   ")]])
def test_empty_answers_land_nowhere(small_reference, answers):
    assert S.probe_topics(small_reference, answers) is None
