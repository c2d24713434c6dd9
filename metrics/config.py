"""Configuration with documented defaults.

* :class:`SuiteConfig` — parameters of the metrics themselves. Stored in the reference
  profile (its bands were computed with them), so a window is always scored with the
  parameters of its reference.
* :class:`ReferenceConfig` — how a reference or baseline profile is built.
* :class:`ScoreConfig` — how a window is judged: minimum size, token budget, band
  quantiles and the health thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from metrics.text import TokenizerConfig


def _from_dict(cls, data: dict):
    names = {f.name for f in fields(cls)}
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names})


@dataclass(frozen=True)
class SuiteConfig:
    """Metric parameters (defaults follow the papers each metric comes from)."""

    mattr_window: int = 100  # Covington & McFall 2010 use 500 on long texts; 100 suits short outputs
    top_ngram_n: int = 3  # n-gram order for the top-n-gram mass share
    top_ngram_k: int = 100  # how many of the most common n-grams
    self_bleu_max_n: int = 4  # Self-BLEU-4 (Zhu et al. 2018)
    self_repetition_n: int = 4  # Salkar et al. 2022
    shingle: int = 5  # word 5-gram shingles for near-duplicates
    num_perm: int = 128  # MinHash permutations
    near_duplicate_threshold: float = 0.8  # Jaccard
    minhash_seed: int = 1
    tail_mass: float = 0.10  # the tail band carries the last 10% of reference token mass
    # semantic metrics embed this many documents of a window (and of each band replicate):
    # ~2.5 s on one core for 256 long outputs, and size-matched bands make it fair
    semantic_sample: int = 256
    # the topic metrics (topic_recall, rare_topic_recall, topic_entropy) count topics over
    # up to this many documents: counting is O(n·K·d), the price is embedding them; at 256
    # documents the absence of two ~2% topics is not evidence (metrics.semantic, TOPIC_SAMPLE)
    topic_sample: int = 512
    semantic_knn: int = 5  # k of the k-NN recall (Kynkäänniemi et al. 2019 use 3; issue 16: 5)

    @property
    def embedded_docs(self) -> int:
        """How many of a window's (or band replicate's) documents are embedded: what the
        widest semantic metric reads; each reads a prefix."""
        return max(self.semantic_sample, self.topic_sample)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SuiteConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class ReferenceConfig:
    """How profiles are built.

    min_documents: fewer documents cannot give a meaningful human band (200).
    calibration_fraction: share of the documents held out to draw the human band from;
      the rest builds the vocabulary, tail band and language model. Without the split
      the reference would score itself and fresh human text would fall outside its band.
    replicates: random samples per band (200: the 1% and 99% quantiles are the 2nd and
      198th order statistics).
    band_sizes: window sizes (documents) whose bands are computed at build time and
      stored in the file; other sizes are computed on first use and memoised. Empty by
      default so that building stays fast for a REST request.
    seed: makes the split and the band draws reproducible.
    """

    min_documents: int = 200
    calibration_fraction: float = 0.4
    replicates: int = 200
    band_sizes: tuple[int, ...] = ()
    seed: int = 0
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    suite: SuiteConfig = field(default_factory=SuiteConfig)

    def to_dict(self) -> dict:
        return {
            "min_documents": self.min_documents,
            "calibration_fraction": self.calibration_fraction,
            "replicates": self.replicates,
            "band_sizes": list(self.band_sizes),
            "seed": self.seed,
            "tokenizer": self.tokenizer.to_dict(),
            "suite": self.suite.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ReferenceConfig:
        base = {k: v for k, v in data.items() if k not in ("tokenizer", "suite")}
        cfg = _from_dict(cls, base)
        return cls(
            **{f.name: getattr(cfg, f.name) for f in fields(cls) if f.name not in ("tokenizer", "suite")},
            tokenizer=TokenizerConfig.from_dict(data.get("tokenizer", {})),
            suite=SuiteConfig.from_dict(data.get("suite", {})),
        )


@dataclass(frozen=True)
class ScoreConfig:
    """How a window is judged. Defaults and why:

    min_documents (50): below this a window is ``insufficient_data``; the bands of tiny
      windows are so wide that nothing could be flagged anyway.
    token_budget (20,000): token-count metrics (distinct-n, entropy, MATTR, compression,
      tail coverage) use at most this many tokens, so their values are comparable across
      windows and the suite stays fast on large windows. The budget actually used is the
      window's token count (capped here) rounded *down* to a grid of 2^(1/8) steps, so
      windows of similar length share one cached band.
    band_low / band_high (0.01 / 0.99): quantiles of the band replicates.

    Human-only health (scoring core):
      collapse when diversity is below its band and its ratio <= collapse_diversity_ratio
      (0.85), or sameness is above its band and its ratio >= collapse_sameness_ratio (1.5);
      early_collapse when tail coverage is below its band and its ratio <=
      early_tail_ratio (0.9). Both need significance (outside the band) and size (the
      ratio), so neither noise nor a tiny but significant shift pages anyone.
    With a baseline (issue "model baselines"): the same three rules against the
      baseline band and baseline ratios (baseline_collapse_diversity_ratio 0.85,
      baseline_collapse_sameness_ratio 1.5, baseline_early_tail_ratio 0.9) — collapse is
      a decline from what the model did when it was known to be good — plus absolute
      floors against human whatever the baseline: collapse when diversity ratio <=
      floor_diversity_ratio (0.5) or sameness ratio >= floor_sameness_ratio (3.0), while
      outside the human band. Healthy production models are rarely human-like (a small LLM
      at temperature 0.7 reads ~0.8 of human distinct-2), so the floors sit far below
      that: they catch degenerate output even if the baseline itself was poor.
    interpolate_bands (True): a band at a window size between two bands stored in the
      profile (``band_sizes`` at build time) is interpolated between them instead of
      computed (milliseconds instead of seconds; see :func:`metrics.bands.interpolate`
      and docs/early-warning.md for how its false-alarm rate was measured). False
      computes it.
    """

    min_documents: int = 50
    token_budget: int = 20_000
    band_low: float = 0.01
    band_high: float = 0.99
    collapse_diversity_ratio: float = 0.85
    collapse_sameness_ratio: float = 1.5
    early_tail_ratio: float = 0.9
    baseline_collapse_diversity_ratio: float = 0.85
    baseline_collapse_sameness_ratio: float = 1.5
    baseline_early_tail_ratio: float = 0.9
    floor_diversity_ratio: float = 0.5
    floor_sameness_ratio: float = 3.0
    interpolate_bands: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.band_low < self.band_high <= 1.0:
            raise ValueError("band quantiles must satisfy 0 <= band_low < band_high <= 1")
        if self.min_documents < 1 or self.token_budget < 1:
            raise ValueError("min_documents and token_budget must be positive")
