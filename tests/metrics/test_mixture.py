"""Synthetic share of a window (metrics.mixture) on planted mixtures.

The fortunes are split by source file: the reference, the generator's training text and the
fresh human text of the windows come from different files, so the human part of a window is
never from the reference's own sources (as in a real stream).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

import metrics
from metrics.errors import MetricsError, ProfileError
from metrics.mixture import MixtureConfig, MixtureModel, filter_by_posterior, stream_mixture
from metrics.synthetic import recursive_generations
from service.demo.sample_data import human_documents_with_source

# its module fixtures embed and score thousands of documents
pytestmark = pytest.mark.slow

WINDOW = 500


@pytest.fixture(scope="module")
def world():
    rows = human_documents_with_source()
    by_source: dict[str, list[str]] = {}
    for text, source in rows:
        by_source.setdefault(source, []).append(text)
    names = sorted(by_source)
    random.Random(11).shuffle(names)
    groups: list[list[str]] = [[], [], []]
    seen = 0
    for name in names:
        g = 0 if seen < 0.5 * len(rows) else (1 if seen < 0.75 * len(rows) else 2)
        groups[g].extend(by_source[name])
        seen += len(by_source[name])
    ref_docs, train, human = groups
    reference = metrics.build_reference(
        ref_docs, "ref", config=metrics.ReferenceConfig(replicates=20)
    )
    gens = recursive_generations(train, generations=3, seed=3)
    g0, g3 = gens[0].model, gens[3].model
    # baselines from some outputs, the windows' synthetic part from other outputs
    base0 = metrics.build_baseline(g0.sample(1500, seed=1), reference, "gen0")
    base3 = metrics.build_baseline(g3.sample(1500, seed=1), reference, "gen3")
    return {
        "reference": reference,
        "human": human,
        "base0": base0,
        "base3": base3,
        "syn0": g0.sample(2000, seed=2),
        "syn3": g3.sample(2000, seed=2),
        "mm0": MixtureModel(reference, [base0], MixtureConfig(bootstrap=100)),
    }


def planted(world, parts, rng) -> list[str]:
    docs: list[str] = []
    for key, share in parts:
        pool = world[key]
        docs += [pool[i] for i in rng.choice(len(pool), round(share * WINDOW), replace=False)]
    human = world["human"]
    docs += [human[i] for i in rng.choice(len(human), WINDOW - len(docs), replace=False)]
    return docs


def test_planted_shares_are_recovered_on_human_text_from_other_sources(world):
    rng = np.random.default_rng(1)
    errors, covered = [], []
    for share in (0.05, 0.1, 0.3, 0.5):
        for _ in range(3):
            r = world["mm0"].estimate(planted(world, [("syn0", share)], rng))
            errors.append(abs(r.estimate - share))
            covered.append(r.low <= share <= r.high)
            assert 0.0 <= r.low <= r.estimate <= r.high <= 1.0
    assert np.mean(errors) <= 0.04, errors
    assert np.mean(covered) >= 0.75, covered


def test_human_only_windows_have_lower_bounds_near_zero(world):
    rng = np.random.default_rng(2)
    for _ in range(4):
        r = world["mm0"].estimate(planted(world, [], rng))
        assert r.low <= 0.02
        assert r.estimate <= 0.05


def test_without_the_human_fit_fresh_human_text_reads_as_more_synthetic(world):
    """The bias the location/scale fit is there for: calibrated on the reference's own
    documents, human text from other sources sits closer to the synthetic side."""
    fixed = MixtureModel(world["reference"], [world["base0"]],
                         MixtureConfig(adapt_human=False, bootstrap=0))
    rng = np.random.default_rng(3)
    docs = planted(world, [("syn0", 0.3)], rng)
    assert fixed.estimate(docs).estimate > world["mm0"].estimate(docs).estimate


def test_the_interval_carries_the_calibration_error_of_a_small_baseline(world):
    """A baseline of 200 outputs calibrates its source on 80 documents: resampling them
    widens the interval; the point estimate does not move."""
    small = metrics.build_baseline(world["syn0"][-200:], world["reference"], "small")
    widths, estimates = {}, {}
    for resamples in (0, 20):
        mm = MixtureModel(world["reference"], [small],
                          MixtureConfig(bootstrap=100, calibration_resamples=resamples))
        r = [mm.estimate(planted(world, [("syn0", 0.3)], np.random.default_rng(seed)))
             for seed in (9, 10)]
        widths[resamples] = np.mean([x.high - x.low for x in r])
        estimates[resamples] = [x.estimate for x in r]
    assert estimates[20] == pytest.approx(estimates[0], abs=1e-9)
    assert widths[20] > 1.15 * widths[0], widths


def test_two_sources_are_split_between_them(world):
    mm = MixtureModel(world["reference"], [world["base0"], world["base3"]],
                      MixtureConfig(bootstrap=50))
    rng = np.random.default_rng(4)
    r = mm.estimate(planted(world, [("syn0", 0.15), ("syn3", 0.25)], rng))
    assert set(r.by_source) == {"gen0", "gen3"}
    assert abs(r.by_source["gen0"]["estimate"] - 0.15) <= 0.1
    assert abs(r.by_source["gen3"]["estimate"] - 0.25) <= 0.1
    assert r.estimate == pytest.approx(sum(s["estimate"] for s in r.by_source.values()))
    for s in r.by_source.values():
        assert s["low"] <= s["estimate"] <= s["high"]


def filter_run(world, seed):
    rng = np.random.default_rng(seed)
    docs = planted(world, [("syn0", 0.3)], rng)
    is_syn = np.zeros(WINDOW, dtype=bool)
    is_syn[: round(0.3 * WINDOW)] = True
    keep, expected, _ = world["mm0"].filter(docs, 0.1)
    return keep, expected, is_syn


def test_filter_drops_synthetic_documents_first_and_meets_its_expected_share(world):
    kept_human, kept_syn, actual = [], [], []
    for seed in (5, 6):
        keep, expected, is_syn = filter_run(world, seed)
        assert expected <= 0.1
        kept_human.append(keep[~is_syn].mean())
        kept_syn.append(keep[is_syn].mean())
        actual.append(is_syn[keep].mean())
    assert np.mean(kept_human) > 2 * np.mean(kept_syn)
    # the expected share is a model quantity; the realised one stays close to it
    assert np.mean(actual) <= 0.13


@pytest.mark.xfail(
    strict=True,
    reason="per-document separation of trigram-generator text from fresh human fortunes is "
    "limited (AUC about 0.86): about 75-79% of human documents are kept, short of 80%",
)
def test_filter_keeps_most_human_documents_at_a_tenth_target_on_thirty_percent_mixtures(world):
    kept = []
    for seed in (5, 6):
        keep, _, is_syn = filter_run(world, seed)
        kept.append(keep[~is_syn].mean())
    assert np.mean(kept) >= 0.8


@pytest.mark.xfail(
    strict=True,
    reason="on split seed 2 the fresh human text is near the generator's subjects and reads "
    "0.015-0.05 synthetic at small shares (docs/synthetic-share.md): MAE 0.036, coverage 0.80",
)
def test_planted_shares_meet_the_targets_on_the_benchmarks_hardest_split(hardest_split):
    """The benchmark's first scenario on split seed 2 (generation 0, T=1.0, 6 windows per
    share): MAE <= 0.03 and 95% intervals covering the truth in >= 90% of windows."""
    bench, baseline, stream = hardest_split
    mm = MixtureModel(bench.reference, [baseline], bench.cfg)
    stats = bench.run("gen 0", mm, stream)
    assert stats.mae <= 0.03 and stats.coverage >= 0.9, (stats.mae, stats.coverage)


@pytest.fixture(scope="module")
def hardest_split():
    from benchmarks.mixture import Bench, Setup

    bench = Bench(Setup(windows=6, split_seed=2), fixed_human=False, log=lambda *_: None)
    model = bench.generation(0)
    return bench, bench.baseline(model, "gen0"), bench.stream(model)


def test_the_semantic_score_meets_the_targets_on_the_benchmarks_hardest_split(hardest_split):
    """The same scenario with the embedding score beside the LM ratio: the human text near
    the generator's subjects no longer reads as synthetic (benchmark: MAE 0.020, coverage
    0.98 with 20 windows per share)."""
    bench, baseline, stream = hardest_split
    mm = MixtureModel(bench.reference, [baseline], MixtureConfig(semantic=True))
    stats = bench.run("gen 0, semantic", mm, stream)
    assert stats.mae <= 0.03 and stats.coverage >= 0.9, (stats.mae, stats.coverage)
    assert stats.false_low <= 0.05


def test_the_joined_estimate_meets_the_targets_on_the_benchmarks_hardest_split(hardest_split):
    """What streams get by default (both estimators joined) where the LM ratio alone misses
    (the strict xfail above): MAE <= 0.03, coverage >= 0.9, and human-only windows rarely
    read a lower bound above 0.02."""
    from metrics.mixture import stream_mixture

    bench, baseline, stream = hardest_split
    mm, why = stream_mixture(bench.reference, [baseline], bench.cfg)
    assert why is None and mm.score_kind == "joined"
    stats = bench.run("gen 0, joined", mm, stream)
    assert stats.mae <= 0.03 and stats.coverage >= 0.9, (stats.mae, stats.coverage)
    assert stats.false_low <= 0.05


def test_filter_by_posterior_keeps_the_largest_set_under_the_target():
    post = np.array([0.9, 0.05, 0.5, 0.0, 0.2, 0.3])
    keep, mean = filter_by_posterior(post, 0.15)
    assert keep.tolist() == [False, True, False, True, True, True]
    assert mean == pytest.approx((0.05 + 0.0 + 0.2 + 0.3) / 4)
    keep, mean = filter_by_posterior(post, 0.0)
    assert keep.tolist() == [False, False, False, True, False, False] and mean == 0.0
    assert filter_by_posterior(post, 1.0)[0].all()


def test_document_order_does_not_change_the_estimate(world):
    rng = np.random.default_rng(7)
    docs = planted(world, [("syn0", 0.2)], rng)
    a = world["mm0"].estimate(docs)
    order = rng.permutation(len(docs))
    b = world["mm0"].estimate([docs[i] for i in order])
    assert b.estimate == pytest.approx(a.estimate, abs=1e-6)
    assert (b.low, b.high) == pytest.approx((a.low, a.high), abs=1e-6)
    assert b.posterior == pytest.approx(a.posterior[order], abs=1e-6)


def test_result_json_has_the_documented_fields(world):
    rng = np.random.default_rng(8)
    out = world["mm0"].estimate(planted(world, [("syn0", 0.1)], rng)).to_dict()
    assert set(out) == {"synthetic_share", "documents"}
    assert set(out["synthetic_share"]) == {"estimate", "low", "high", "by_source", "unexplained",
                                           "scores"}
    assert out["synthetic_share"]["scores"] == "lexical"
    assert set(out["synthetic_share"]["by_source"]["gen0"]) == {"estimate", "low", "high"}
    assert out["documents"] == WINDOW


@pytest.fixture(scope="module")
def semantic_mm0(world):
    return MixtureModel(world["reference"], [world["base0"]],
                        MixtureConfig(bootstrap=100, semantic=True))


def test_the_semantic_score_keeps_most_human_documents_at_a_tenth_target(world, semantic_mm0):
    """With the embedding score beside the LM ratio, filtering 0.3 mixtures at a 0.1 target
    keeps >= 80% of the human documents (the LM ratio alone: ~75-79%, the xfail above)
    and the kept set's realised share stays near its expected one."""
    kept, actual = [], []
    for seed in (5, 6):
        rng = np.random.default_rng(seed)
        docs = planted(world, [("syn0", 0.3)], rng)
        is_syn = np.zeros(WINDOW, dtype=bool)
        is_syn[: round(0.3 * WINDOW)] = True
        keep, expected, result = semantic_mm0.filter(docs, 0.1)
        assert expected <= 0.1 and result.scores == "lexical+semantic"
        kept.append(keep[~is_syn].mean())
        actual.append(is_syn[keep].mean())
    assert np.mean(kept) >= 0.8, kept
    assert np.mean(actual) <= 0.13, actual


def test_the_semantic_score_estimates_planted_shares(world, semantic_mm0):
    rng = np.random.default_rng(12)
    for share in (0.0, 0.1, 0.3):
        r = semantic_mm0.estimate(planted(world, [("syn0", share)], rng))
        assert abs(r.estimate - share) <= 0.05, (share, r.estimate)
        assert r.to_dict()["synthetic_share"]["scores"] == "lexical+semantic"


def test_the_semantic_score_needs_embeddings_and_a_model(world):
    lexical = metrics.build_reference(world["human"][:400], "lexical", embedder=None,
                                      config=metrics.ReferenceConfig(replicates=5))
    base = metrics.build_baseline(world["syn0"][:300], lexical, "plain", embedder=None)
    with pytest.raises(MetricsError, match="reference built with embeddings"):
        MixtureModel(lexical, [base], MixtureConfig(semantic=True))
    plain = metrics.build_baseline(world["syn0"][:300], world["reference"], "plain",
                                   embedder=None)
    with pytest.raises(MetricsError, match="source 'plain' built with embeddings"):
        MixtureModel(world["reference"], [plain], MixtureConfig(semantic=True))


class _CountingEmbedder:
    """Passes texts to the embedder it wraps and counts them."""

    def __init__(self, inner) -> None:
        self.inner, self.identity, self.dim = inner, inner.identity, inner.dim
        self.texts = 0

    def embed(self, texts):
        self.texts += len(texts)
        return self.inner.embed(texts)


def _stream_window(world, n: int, share: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    k = round(share * n)
    syn, human = world["syn0"], world["human"]
    return ([syn[i] for i in rng.choice(len(syn), k, replace=False)]
            + [human[i] for i in rng.choice(len(human), n - k, replace=False)])


def test_a_scored_stream_window_reads_the_documents_its_semantic_metrics_embed(world):
    """metrics.score(..., mixture=) with the semantic score: an 800-document window's share
    is estimated on the 512 documents the semantic metrics embed, embedding nothing more,
    and equals the mixture's own estimate of those documents."""
    from metrics.scoring import encode_window_texts
    from metrics.semantic import corpus_texts

    reference = world["reference"]
    inner = reference.context().semantic.embedder
    counter = _CountingEmbedder(inner)
    reference.use_embedder(counter)
    try:
        mm = MixtureModel(reference, [world["base0"]], MixtureConfig(bootstrap=100,
                                                                    semantic=True))
        docs = _stream_window(world, 800, 0.3, seed=21)
        result = metrics.score(docs, reference, mixture=mm, with_evidence=False)
        embedded = counter.texts
    finally:
        reference.use_embedder(inner)
    share = result["synthetic_share"]
    assert share["scores"] == "lexical+semantic" and share["documents"] == 512
    assert abs(share["estimate"] - 0.3) <= 0.1, share
    corpus, _, texts = encode_window_texts(docs, reference)
    read = [texts[i] for i in np.flatnonzero(corpus.lengths > 0)[:512]]
    # what the topic metrics read (each distinct token sequence once); the share adds nothing
    distinct = set(corpus_texts(corpus.take(np.flatnonzero(corpus.lengths > 0)[:512])))
    assert embedded == len(distinct) > 500
    direct = mm.estimate(read)  # embeds them itself
    assert share["estimate"] == pytest.approx(direct.estimate, abs=2e-3)


def test_a_joined_window_is_the_midpoint_of_both_estimates_and_spans_both_intervals(world):
    """JoinedMixture on a scored window: the LM ratio over all 800 documents, the embedding
    score over the 512 the semantic metrics embed; each part is what that estimator alone
    gives the window, and the joined numbers are built from the parts."""
    from dataclasses import replace

    from metrics.mixture import JoinedMixture

    cfg = MixtureConfig(bootstrap=100)
    joined = JoinedMixture(MixtureModel(world["reference"], [world["base0"]], cfg),
                           MixtureModel(world["reference"], [world["base0"]],
                                        replace(cfg, semantic=True)))
    docs = _stream_window(world, 800, 0.3, seed=23)
    share = metrics.score(docs, world["reference"], mixture=joined,
                          with_evidence=False)["synthetic_share"]
    lex = metrics.score(docs, world["reference"], mixture=joined.lexical,
                        with_evidence=False)["synthetic_share"]
    sem = metrics.score(docs, world["reference"], mixture=joined.semantic,
                        with_evidence=False)["synthetic_share"]
    assert share["scores"] == "joined" and share["documents"] == 800
    keys = ("estimate", "low", "high", "unexplained", "documents")
    assert share["parts"] == {"lexical": {k: lex[k] for k in keys},
                              "lexical+semantic": {k: sem[k] for k in keys}}
    assert (lex["documents"], sem["documents"]) == (800, 512)
    assert share["estimate"] == pytest.approx((lex["estimate"] + sem["estimate"]) / 2,
                                              abs=1e-4)
    assert share["low"] == min(lex["low"], sem["low"])
    assert share["high"] == max(lex["high"], sem["high"])
    assert share["low"] <= share["estimate"] <= share["high"]
    src = share["by_source"][world["base0"].name]
    assert src["low"] == min(lex["by_source"][world["base0"].name]["low"],
                             sem["by_source"][world["base0"].name]["low"])
    assert abs(share["estimate"] - 0.3) <= 0.1, share


def test_join_shares_spans_disjoint_intervals():
    """Two estimators that disagree: the span holds both intervals and the midpoint."""
    from metrics.mixture import join_shares

    def part(scores, est, low, high, docs):
        return {"estimate": est, "low": low, "high": high, "unexplained": 0.0,
                "scores": scores, "documents": docs,
                "by_source": {"a": {"estimate": est, "low": low, "high": high}}}

    out = join_shares(part("lexical", 0.02, 0.0, 0.05, 2000),
                      part("lexical+semantic", 0.2, 0.14, 0.27, 512))
    assert (out["estimate"], out["low"], out["high"]) == (0.11, 0.0, 0.27)
    assert out["by_source"]["a"] == {"estimate": 0.11, "low": 0.0, "high": 0.27}
    assert out["documents"] == 2000 and out["scores"] == "joined"
    assert out["parts"]["lexical+semantic"]["low"] == 0.14


def test_a_scored_stream_window_with_the_lm_score_reads_every_document(world):
    docs = _stream_window(world, 600, 0.1, seed=22)
    result = metrics.score(docs, world["reference"], mixture=world["mm0"], with_evidence=False)
    share = result["synthetic_share"]
    assert share["scores"] == "lexical" and share["documents"] == 600
    assert share["estimate"] == pytest.approx(world["mm0"].estimate(docs).estimate, abs=1e-4)
    assert "synthetic_share_unavailable" not in result


def test_a_stream_mixture_joins_both_estimators_when_every_profile_has_embeddings(world):
    model, why = stream_mixture(world["reference"], [world["base0"]])
    assert model.score_kind == "joined" and why is None
    assert (model.lexical.score_kind, model.semantic.score_kind) == ("lexical",
                                                                     "lexical+semantic")
    model, why = stream_mixture(world["reference"], [world["base0"]], scores="semantic")
    assert model.score_kind == "lexical+semantic" and why is None
    model, why = stream_mixture(world["reference"], [world["base0"]], scores="lexical")
    assert model.score_kind == "lexical" and why is None
    with pytest.raises(ValueError, match="scores must be one of"):
        stream_mixture(world["reference"], [world["base0"]], scores="both")
    plain = metrics.build_baseline(world["syn0"][:300], world["reference"], "plain",
                                   embedder=None)
    for scores in ("joined", "semantic"):
        model, why = stream_mixture(world["reference"], [world["base0"], plain], scores=scores)
        assert model.score_kind == "lexical" and "source 'plain' built with embeddings" in why
    other = metrics.build_reference(world["human"][:400], "other", embedder=None,
                                    config=metrics.ReferenceConfig(replicates=5))
    with pytest.raises(ProfileError, match="another reference"):
        stream_mixture(other, [world["base0"]])
    # a window scored against another reference than the mixture's: scored, and said why
    result = metrics.score(world["human"][:80], other, mixture=world["mm0"],
                           with_evidence=False)
    assert "another reference" in result["synthetic_share_unavailable"]
    assert result["health"] and "synthetic_share" not in result


def test_wrong_profiles_and_empty_windows_are_refused(world):
    with pytest.raises(ProfileError, match="reference"):
        MixtureModel(world["base0"], [world["base3"]])
    with pytest.raises(ProfileError, match="baseline"):
        MixtureModel(world["reference"], [world["reference"]])
    with pytest.raises(MetricsError, match="at least one source"):
        MixtureModel(world["reference"], [])
    other = metrics.build_reference(world["human"][:400], "other",
                                    config=metrics.ReferenceConfig(replicates=5))
    with pytest.raises(ProfileError, match="another reference"):
        MixtureModel(other, [world["base0"]])
    with pytest.raises(MetricsError, match="no documents"):
        world["mm0"].estimate([])
    with pytest.raises(MetricsError, match="max_synthetic"):
        world["mm0"].filter(world["human"][:60], 1.5)


@pytest.mark.parametrize("per_row", [False, True, "human"])
def test_em_solves_each_row_as_if_it_were_alone(per_row):
    """The bootstrap's replicates are fitted together, each stopping at its own
    convergence: stacked, every row reaches the weights it reaches alone (with one density
    matrix for all rows, with one per row, and with a human column per row beside shared
    ones), and rows that converge late still do."""
    from metrics.mixture import _em, _HumanPerRow

    rng = np.random.default_rng(3)
    n, comps = 400, 3
    base = rng.gamma(2.0, 1.0, size=(n, comps))
    # rows from nearly converged (counts spread as the mixture) to far (one-sided counts)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=6).astype(np.float64)
    counts[-1] = np.where(base[:, 0] > base[:, 1], 3.0, 0.0)
    dens = np.stack([base * rng.uniform(0.8, 1.2, size=base.shape) for _ in counts]) \
        if per_row else base
    if per_row == "human":
        dens = dens.copy()
        dens[:, :, 1:] = base[:, 1:]  # only the first column differs between rows
        together = _em(_HumanPerRow(dens[:, :, 0], base[:, 1:]), counts, 300, 1e-9)
    else:
        together = _em(dens, counts, 300, 1e-9)
    for b in range(len(counts)):
        alone = _em(dens[b] if per_row else dens, counts[b:b + 1], 300, 1e-9)[0]
        assert np.allclose(together[b], alone, atol=1e-6), (b, together[b], alone)
    assert np.allclose(together.sum(axis=1), 1.0)


def test_replicates_find_their_human_fit_by_ascent_at_a_fraction_of_the_fits(world, monkeypatch):
    """Each bootstrap replicate refits the human location/scale on a 5 x 5 lattice. The
    steepest-ascent search lands where fitting every lattice point does for nearly every
    replicate (a replicate whose likelihood has a second, higher peak on the lattice may
    keep the nearer one), gives the same interval to within 0.01, and costs at most half
    the fits (a window of two sources, 2,000 documents)."""
    from metrics import mixture
    from metrics.mixture import _FLOOR, _em

    mm = MixtureModel(world["reference"], [world["base0"], world["base3"]])
    rng = np.random.default_rng(8)
    docs = [world["syn0"][i] for i in rng.choice(2000, 300, replace=False)]
    docs += [world["syn3"][i] for i in rng.choice(2000, 300, replace=False)]
    docs += [world["human"][i] for i in rng.choice(len(world["human"]), 1400, replace=False)]
    u = (mm.scores(mm.corpus(docs)) - mm._center) / mm._scale
    weights, shift, scale = mm._fit(u, mm._fixed(u))
    centers, _, counts = mm._resamples(u)
    fixed = mm._fixed(centers)

    fitted_rows = []

    def counting_em(dens, rows, *args, **kwargs):
        fitted_rows.append(len(rows))
        return _em(dens, rows, *args, **kwargs)

    monkeypatch.setattr(mixture, "_em", counting_em)
    ascent = mm._replicate_fits(centers, fixed, counts, weights, shift, scale)
    monkeypatch.undo()
    per_replicate = sum(fitted_rows) / len(counts)

    steps = mm._steps()
    best_ll = np.full(len(counts), -np.inf)
    every = np.zeros_like(ascent)
    for cand in mm._around((shift, scale), (steps[0] / 2.0, steps[1] ** 0.5), 2):
        dens = np.column_stack([mm._human(centers, *cand), fixed]) + _FLOOR
        w = _em(dens, counts, 300, 1e-5, start=weights)
        ll = (counts * np.log(w @ dens.T)).sum(axis=1)
        better = ll > best_ll
        best_ll[better], every[better] = ll[better], w[better]

    same = np.abs(ascent - every).max(axis=1) < 1e-9
    assert same.mean() >= 0.9, same.mean()
    pi_ascent, pi_every = ascent[:, 1:3].sum(axis=1), every[:, 1:3].sum(axis=1)
    for q in (0.025, 0.975):
        assert abs(np.quantile(pi_ascent, q) - np.quantile(pi_every, q)) <= 0.01
    assert per_replicate <= 12.5, per_replicate


def test_the_point_fit_fits_each_rounds_candidates_together(world, monkeypatch):
    """The full window's human location/scale: the grid and each of its three refinements
    are fitted as one batch (4 EM calls, not 115) and land where fitting the candidates
    one by one does (written out here: the search as it was)."""
    from metrics import mixture
    from metrics.mixture import _FLOOR, _em

    mm = MixtureModel(world["reference"], [world["base0"], world["base3"]])
    rng = np.random.default_rng(5)
    docs = [world["syn3"][i] for i in rng.choice(2000, 200, replace=False)]
    docs += [world["human"][i] for i in rng.choice(len(world["human"]), 800, replace=False)]
    u = (mm.scores(mm.corpus(docs)) - mm._center) / mm._scale
    fixed = mm._fixed(u)

    calls = []

    def counting_em(*args, **kwargs):
        calls.append(1)
        return _em(*args, **kwargs)

    monkeypatch.setattr(mixture, "_em", counting_em)
    weights, shift, scale = mm._fit(u, fixed)
    monkeypatch.undo()
    assert len(calls) == 4

    def one(cand, start):
        dens = np.column_stack([mm._human(u, *cand), fixed]) + _FLOOR
        w = _em(dens, np.ones((1, len(u))), mm.config.max_iter, mm.config.tol, start=start)[0]
        return float(np.log(dens @ w).sum()), w

    best = None
    for cand in mm._grid():
        ll, w = one(cand, None if best is None else best[1])
        if best is None or ll > best[0]:
            best = (ll, w, cand)
    steps = mm._steps()
    for _ in range(3):
        steps = (steps[0] / 2.0, steps[1] ** 0.5)
        for cand in mm._around(best[2], steps, 1):
            ll, w = one(cand, best[1])
            if ll > best[0]:
                best = (ll, w, cand)
    assert (shift, scale) == best[2]
    assert np.allclose(weights, best[1], atol=1e-4), (weights, best[1])


def test_calibration_resamples_are_built_once_per_model(world, monkeypatch):
    """The densities of the calibration resamples depend on the model alone: the first
    window builds them, later windows reuse them, with the same result as rebuilding; a
    model whose resamples would take more memory than allowed rebuilds them per window."""
    from metrics import mixture

    built = []
    binned = mixture._binned_density

    def counting(*args, **kwargs):
        built.append(1)
        return binned(*args, **kwargs)

    monkeypatch.setattr(mixture, "_binned_density", counting)
    mm = MixtureModel(world["reference"], [world["base0"]], MixtureConfig(bootstrap=40))
    at_build = len(built)
    window = _stream_window(world, 400, 0.3, seed=4)
    first = mm.estimate(window)
    per_window = len(built) - at_build
    assert per_window == mm.config.calibration_resamples * 2  # human and the source
    second = mm.estimate(window)
    assert len(built) == at_build + per_window  # nothing rebuilt
    assert (second.estimate, second.low, second.high) == (first.estimate, first.low, first.high)

    monkeypatch.setattr(mixture, "_KEEP_RESAMPLED_BYTES", 0)
    unkept = MixtureModel(world["reference"], [world["base0"]], MixtureConfig(bootstrap=40))
    before = len(built)
    for _ in range(2):
        again = unkept.estimate(window)
        assert (again.estimate, again.low, again.high) == (first.estimate, first.low, first.high)
    assert len(built) - before == 2 * per_window
