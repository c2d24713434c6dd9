"""Semantic validation: do the embedding metrics separate human from collapsed text?

    .venv/bin/python -m benchmarks.semantic [--window 500] [--windows 60] [--planted 20]
    .venv/bin/python -m benchmarks.semantic --memory   # a worker's resident memory per stage
    .venv/bin/python -m benchmarks.semantic --topic-sweep   # topic counts by sample size

Runs on the detection benchmark's split of the fortunes (``benchmarks.detection``) and
prints, per scenario, each semantic metric's effect size in band standard deviations
(value minus human band mean, over the raw replicates' standard deviation, signed so that
+ is the metric's collapse direction):

* fresh held-out human windows: how often each metric leaves its human band, and the
  health state with the registry's current weights (>= 59/60 healthy is the bar);
* the recursive word trigram generator (``metrics.synthetic``), "replace" at a realistic
  and at a tiny budget, and decoding settings of generation 0 (temperature, top-k);
* a planted loss: every document of two rare reference topics removed from human windows:
  are both topics named in ``evidence.vanished_topics``, and do ``topic_recall`` /
  ``rare_topic_recall`` leave their bands?

It ends with the weights the effect sizes support (rule below) next to the registry's.
``benchmarks.detection`` runs the same tables after its own.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

import metrics
from metrics.registry import BY_NAME, DOWN

SEMANTIC = ("semantic_similarity", "semantic_vendi", "semantic_recall", "topic_recall",
            "rare_topic_recall", "topic_entropy", "semantic_mmd")
# weight rule: a metric joins its signal when, on the collapsed windows, its median effect is
# at least MIN_EFFECT band standard deviations in its collapse direction, and it leaves its
# human band on at most MAX_HUMAN_OUTSIDE of fresh human windows
MIN_EFFECT = 2.0
MAX_HUMAN_OUTSIDE = 0.05


@dataclass
class Table:
    """One scenario: a row of oriented effect sizes per window, plus checks."""

    title: str
    rows: list[tuple[str, dict[str, float | None], str]] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        head = ["window", *[n.replace("semantic_", "sem_") for n in SEMANTIC], "health"]
        body = [[label, *["-" if z.get(n) is None else f"{z[n]:+.1f}" for n in SEMANTIC],
                 health] for label, z, health in self.rows]
        table = [head, *body]
        widths = [max(len(r[i]) for r in table) for i in range(len(head))]
        lines = [f"## {self.title}", ""]
        for k, row in enumerate(table):
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(row, widths))))
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += self.notes
        lines += [f"check: {text}: {'PASS' if ok else 'FAIL'}" for text, ok in self.checks]
        return "\n".join(lines)


def effects(result: dict, reference: metrics.Profile) -> dict[str, float | None]:
    """Each semantic metric's (value - human band mean) / band sd, + = collapse direction."""
    band = reference.band(result["documents"], result["token_budget"])
    out: dict[str, float | None] = {}
    for name in SEMANTIC:
        i = list(metrics.registry.METRIC_NAMES).index(name)
        value = result["metrics"][name]["value"]
        column = band[:, i][~np.isnan(band[:, i])]
        sd = float(np.std(column, ddof=1)) if len(column) > 2 else 0.0
        if value is None or sd == 0.0:
            out[name] = None
            continue
        sign = -1.0 if BY_NAME[name].direction == DOWN else 1.0
        out[name] = sign * (value - float(column.mean())) / sd
    return out


class Semantic:
    """The semantic scenarios on a detection harness (its reference, split and scorer)."""

    def __init__(self, harness, log: Callable[[str], None] = lambda s: None):
        self.h = harness
        self.log = log
        self.reference: metrics.Profile = harness.reference
        self.timings: dict[str, float] = {}

    def _row(self, table: Table, label: str, docs: Sequence[str]) -> dict:
        start = time.monotonic()
        result = self.h.score(docs)
        self.timings.setdefault("score", 0.0)
        self.timings["score"] += time.monotonic() - start
        table.rows.append((label, effects(result, self.reference), result["health"]))
        return result

    def human(self, windows: int) -> tuple[Table, dict[str, float]]:
        s = self.h.setup
        rng = random.Random(s.seed + 16)
        table = Table(f"held-out human windows ({windows} x {s.window} documents)")
        outside = {n: 0 for n in SEMANTIC}
        healthy = 0
        for i in range(windows):
            result = self._row(table, f"human {i:02d}", rng.sample(self.h.held, s.window))
            healthy += result["health"] == "healthy"
            for n in SEMANTIC:
                outside[n] += bool(result["metrics"][n]["outside_band"])
        table.notes.append("outside the human band: " + ", ".join(
            f"{n} {outside[n]}/{windows}" for n in SEMANTIC))
        need = windows - max(1, windows // 60)
        table.checks.append((f"healthy in {healthy}/{windows} windows (>= {need})",
                             healthy >= need))
        return table, {n: outside[n] / windows for n in SEMANTIC}

    def generations(self, gens: list, title: str) -> Table:
        table = Table(title)
        for g in gens:
            self._row(table, f"gen {g.index}", g.model.sample(self.h.setup.window,
                                                              seed=10_000 + g.index))
        return table

    def decoding(self, model) -> Table:
        table = Table("decoding settings of generation 0 (human reference)")
        settings = [("T=1.0", {}), ("T=0.8", {"temperature": 0.8}),
                    ("T=0.7", {"temperature": 0.7}), ("top-k 20", {"top_k": 20}),
                    ("T=0.5", {"temperature": 0.5})]
        for k, (label, decoding) in enumerate(settings):
            self._row(table, label, model.sample(self.h.setup.window, seed=41_000 + k,
                                                 **decoding))
        return table

    def planted(self, windows: int) -> Table:
        """Remove every document of two rare reference topics (the two largest rare ones:
        for the tiniest, absence from the topic sample is not evidence) from human
        windows."""
        s = self.h.setup
        ref = self.reference
        sem = ref.semantic
        embedder = ref.context().semantic.embedder
        rare = np.flatnonzero(sem.rare)
        a, b = rare[np.argsort(-sem.shares[rare], kind="stable")][:2]
        table = Table(f"planted: the documents of rare topics '{sem.names[a]}' "
                      f"({sem.shares[a]:.1%}) and '{sem.names[b]}' ({sem.shares[b]:.1%}) "
                      f"removed from {windows} human windows")
        rng = random.Random(s.seed + 17)
        named = out_topic = out_rare = intact_out = 0
        for i in range(windows):
            window = rng.sample(self.h.held, s.window)
            vectors = embedder.embed([" ".join(metrics.tokenize(d)) for d in window])
            labels = np.argmax(vectors @ sem.centroids.T, axis=1)
            kept = [d for d, label in zip(window, labels) if label not in (a, b)]
            result = self._row(table, f"planted {i:02d} (-{len(window) - len(kept)})", kept)
            vanished = {t["topic"] for t in result["evidence"]["vanished_topics"]}
            named += {sem.names[a], sem.names[b]} <= vanished
            out_topic += bool(result["metrics"]["topic_recall"]["outside_band"])
            out_rare += bool(result["metrics"]["rare_topic_recall"]["outside_band"])
            if i < 5:  # the same windows intact: inside the bands?
                intact = self.h.score(window)
                intact_out += any(intact["metrics"][n]["outside_band"]
                                  for n in ("topic_recall", "rare_topic_recall"))
        table.notes.append(
            f"both topics named as vanished: {named}/{windows}; topic_recall outside its band: "
            f"{out_topic}/{windows}; rare_topic_recall outside: {out_rare}/{windows}; intact "
            f"windows with either outside: {intact_out}/{min(5, windows)}")
        table.checks.append((f"both topics named in >= 90% ({named}/{windows})",
                             named >= 0.9 * windows))
        table.checks.append((f"rare_topic_recall out of band in >= 90% ({out_rare}/{windows})",
                             out_rare >= 0.9 * windows))
        table.checks.append((f"topic_recall out of band in >= 90% ({out_topic}/{windows})",
                             out_topic >= 0.9 * windows))
        return table


def suggested_weights(collapsed: list[dict[str, float | None]],
                      human_outside: dict[str, float]) -> dict[str, float]:
    """1 for a metric that separates (see MIN_EFFECT / MAX_HUMAN_OUTSIDE), else 0."""
    out = {}
    for name in SEMANTIC:
        z = [e[name] for e in collapsed if e.get(name) is not None]
        moves = bool(z) and float(np.median(z)) >= MIN_EFFECT
        quiet = human_outside.get(name, 1.0) <= MAX_HUMAN_OUTSIDE
        out[name] = 1.0 if moves and quiet and BY_NAME[name].signal != "typicality" else 0.0
    return out


def scenarios(harness, replace_gens: list, tiny_gens: list | None, *, windows: int,
              planted: int, log: Callable[[str], None] = lambda s: None) -> list[Table]:
    """Every semantic table, the weights check last."""
    sem = Semantic(harness, log)
    if harness.reference.semantic is None:
        t = Table("semantic metrics")
        t.notes.append("skipped: " + harness.reference.context().semantic_unavailable)
        return [t]
    human, outside = sem.human(windows)
    log("semantic: human windows done")
    tables = [human]
    rep = sem.generations(replace_gens, "replace, realistic budget (human reference)")
    tables.append(rep)
    collapsed = [z for label, z, _ in rep.rows[3:]]
    if tiny_gens:
        tiny = sem.generations(tiny_gens, "replace, tiny budget (human reference)")
        tables.append(tiny)
        collapsed += [z for label, z, _ in tiny.rows[2:]]
    dec = sem.decoding(replace_gens[0].model)
    tables.append(dec)
    collapsed += [z for label, z, _ in dec.rows if label in ("T=0.7", "top-k 20", "T=0.5")]
    log("semantic: collapse scenarios done")
    if planted:
        tables.append(sem.planted(planted))
    weights = suggested_weights(collapsed, outside)
    t = Table("weights: median effect on collapsed windows (replace gen 3+, tiny gen 2+, "
              "T<=0.7/top-k 20) and human false-outside rate")
    for name in SEMANTIC:
        z = [e[name] for e in collapsed if e.get(name) is not None]
        med = f"{np.median(z):+.2f}" if z else "-"
        t.notes.append(f"{name:20s} median effect {med:>6s} sd; human outside "
                       f"{outside[name]:.0%}; suggested weight {weights[name]:.0f}; "
                       f"registry weight {BY_NAME[name].weight:g}")
    t.checks.append(("registry weights follow the rule",
                     all(weights[n] == BY_NAME[n].weight for n in SEMANTIC)))
    tables.append(t)
    return tables


def topic_sample_sweep(harness, sizes: Sequence[int], replicates: int = 2000,
                       windows: int = 400, held_docs: int = 4000) -> str:
    """How many documents the topic counts need: per sample size, the share of fresh
    held-out samples, and of samples with every document of the two largest rare topics
    removed, below the 1% quantile of ``replicates`` samples of the calibration pool (the
    raw replicates, Hyndman & Fan definition 6). Topic counts only: nearest reference
    centroid of each document's embedding, as the metrics count them."""
    from metrics.semantic import share_reached

    ref = harness.reference
    sem = ref.semantic
    embedder = ref.context().semantic.embedder
    pool = sem.pool.astype(np.float32)[ref.pool.lengths > 0]
    held = embedder.embed([" ".join(metrics.tokenize(d)) for d in harness.held[:held_docs]])
    k = len(sem.centroids)
    pool_label = np.argmax(pool @ sem.centroids.T, axis=1)
    held_label = np.argmax(held @ sem.centroids.T, axis=1)
    rare = np.flatnonzero(sem.rare)
    a, b = rare[np.argsort(-sem.shares[rare], kind="stable")][:2]
    kept = np.flatnonzero((held_label != a) & (held_label != b))
    rng = np.random.default_rng(harness.setup.seed)
    title = (f"## topic counts by sample size ({len(pool)}-document pool, {k} topics, "
             f"{replicates} replicates; {windows} fresh and {windows} planted samples: rare "
             f"topics of {sem.shares[a]:.1%} and {sem.shares[b]:.1%} removed)")
    lines = [title, "",
             "metric             documents  replicates<1  fresh<q01  planted<q01",
             "-----------------  ---------  ------------  ---------  -----------"]
    for name, topics in (("topic_recall", np.arange(k)), ("rare_topic_recall", rare)):
        for n in sizes:
            def values(labels: np.ndarray, among: int | np.ndarray, times: int,
                       n: int = n, topics: np.ndarray = topics) -> np.ndarray:
                return np.array([share_reached(
                    np.bincount(labels[rng.choice(among, n, replace=False)], minlength=k),
                    topics, sem.shares) for _ in range(times)])

            reps = values(pool_label, len(pool_label), replicates)
            fresh = values(held_label, len(held_label), windows)
            planted = values(held_label, kept, windows)
            bound = float(np.quantile(reps, 0.01, method="weibull"))
            lines.append(f"{name:17s}  {n:9d}  {np.mean(reps < 1):12.1%}  "
                         f"{np.mean(fresh < bound):9.1%}  {np.mean(planted < bound):11.1%}")
    return "\n".join(lines)


WINDOW_GOAL_SECONDS = 3.0  # a 500-document window's semantic metrics, embedding included
BUILD_GOAL_SECONDS = 180.0  # the semantic part of a 5,000-document reference build
MEMORY_GOAL_MB = 400.0  # a worker's resident memory after scoring with embeddings


def cost_rows(row, timed, window_docs: int = 500, reference_docs: int = 5000) -> list:
    """Cost per stage, as ``benchmarks.scoring`` rows (``row``/``timed`` are its Row and
    timed): model load, the semantic part of a reference build, a window's embedding and
    metrics, one band's semantic columns, and the process's peak memory."""
    import resource

    from benchmarks.detection import Setup, split_fortunes
    from metrics import semantic as S
    from metrics.embedding import load_embedder
    from metrics.registry import REGISTRY
    from metrics.sample import Corpus, Sample
    from metrics.scoring import encode_window
    from metrics.text import tokenize_documents

    ref_docs, _, held = split_fortunes(Setup())
    docs = ref_docs[:reference_docs]
    load, embedder = timed(load_embedder)
    cfg = metrics.ReferenceConfig()
    n_cal = round(cfg.calibration_fraction * len(docs))
    pool = Corpus.from_tokens(tokenize_documents(docs[:n_cal], cfg.tokenizer))
    prof = Corpus.from_tokens(tokenize_documents(docs[n_cal:], cfg.tokenizer))
    build, _ = timed(lambda: S.build_semantic(pool, prof, embedder, 0))
    reference = metrics.build_reference(docs[:600], "cost", embedder=embedder,
                                        config=metrics.ReferenceConfig(replicates=20))
    ctx = reference.context()
    window = held[:window_docs]

    def embed_window() -> np.ndarray:
        corpus, keys = encode_window(window, reference)
        return S.window_vectors(Sample(corpus, 1000, keys), ctx.semantic)

    embed, _ = timed(embed_window, 3)
    corpus, keys = encode_window(window, reference)
    sample = Sample(corpus, 1000, keys)
    S.window_vectors(sample, ctx.semantic)
    specs = [spec for spec in REGISTRY if spec.name in SEMANTIC]
    compute, _ = timed(lambda: [sample._cache.pop("topic_counts", None)]
                       + [spec.fn(sample, ctx) for spec in specs], 3)
    vectors = reference.semantic.pool
    lengths = reference.pool.lengths
    rng = np.random.default_rng(0)

    def band_columns() -> None:
        for _ in range(200):
            replicate = Sample(reference.pool.take(np.arange(10)), 10, np.zeros(10, np.uint64))
            sel = rng.permutation(len(lengths))[:window_docs]
            replicate._cache["embeddings"] = S.band_vectors(vectors, lengths, sel,
                                                            ctx.suite.semantic_sample)
            for spec in specs:
                spec.fn(replicate, ctx)

    band, _ = timed(band_columns)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = type(embed)(embed.cpu + compute.cpu, embed.wall + compute.wall)
    embedded = min(window_docs, ctx.suite.embedded_docs)
    pairwise = min(window_docs, ctx.suite.semantic_sample)
    return [
        row("embedding model load (all-MiniLM-L6-v2 int8)", load, "-", None, "<= 5", ""),
        row(f"semantic part of a {len(docs)}-doc reference build", build, "-", None,
            f"<= {BUILD_GOAL_SECONDS:g}",
            f"embeds {pool.n_docs} calibration + {min(prof.n_docs, S.REF_CAP)} reference docs"),
        row(f"window embedding ({embedded} of {window_docs} docs)", embed, "-", None,
            f"<= {WINDOW_GOAL_SECONDS:g}", "one onnxruntime thread"),
        row(f"7 semantic metrics ({pairwise} / {embedded} vectors)", compute, "-", None,
            "<= 0.5", "pairwise / topic counts"),
        row(f"semantic window total ({window_docs} docs)", total, "-", None,
            f"<= {WINDOW_GOAL_SECONDS:g}", "embedding + metrics"),
        row("semantic columns of one 200-replicate band", band, "-", None, "<= 60",
            "from the stored float16 pool embeddings"),
        row("peak resident memory, MB (in the seconds columns)", type(embed)(peak_mb, peak_mb),
            "-", None, f"<= {MEMORY_GOAL_MB:g}", "ru_maxrss after all of the above"),
    ]


def _memory_mb() -> tuple[float, float]:
    """(resident, peak resident) MB of this process, from /proc (Linux)."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def memory_child(reference_file: str, window: int) -> int:
    """A worker's memory, stage by stage, in a fresh process: the worker's imports, the
    embedding model, a stored reference profile, then windows scored with their bands."""
    from service.demo.sample_data import human_documents

    stages = [("python", *_memory_mb())]
    import service.worker.tasks  # noqa: F401  (what a worker process imports)

    stages.append(("worker imports", *_memory_mb()))
    from metrics.embedding import load_embedder

    embedder = load_embedder()
    stages.append(("embedding model loaded", *_memory_mb()))
    with open(reference_file, "rb") as fh:
        reference = metrics.Profile.from_bytes(fh.read())
    reference.use_embedder(embedder)
    stages.append(("reference profile loaded", *_memory_mb()))
    held = human_documents()[-(4 * window):]
    for label, docs in ((f"{window}-doc window scored (band computed)", held[:window]),
                        (f"another {window}-doc window", held[window:2 * window]),
                        (f"{2 * window}-doc window scored", held[2 * window:])):
        metrics.score(docs, reference)
        stages.append((label, *_memory_mb()))
    print(f"{'stage':<44}{'resident MB':>12}{'peak MB':>10}")
    for label, rss, peak in stages:
        print(f"{label:<44}{rss:>12.1f}{peak:>10.1f}")
    print(f"peak {stages[-1][2]:.0f} MB (goal <= {MEMORY_GOAL_MB:g})")
    return 0


def memory(window: int, reference_docs: int = 5000) -> int:
    """Build a reference of ``reference_docs`` fortunes (as the detection benchmark's split),
    then measure a fresh worker-like process scoring windows against it."""
    import subprocess
    import tempfile
    from pathlib import Path

    from benchmarks.detection import Setup, split_fortunes

    ref_docs, _, _ = split_fortunes(Setup())
    profile = metrics.build_reference(ref_docs[:reference_docs], "memory")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.cwp"
        metrics.save_profile(profile, path)
        return subprocess.call([sys.executable, "-m", "benchmarks.semantic", "--memory-child",
                                str(path), "--window", str(window)])


def main(argv: list[str] | None = None) -> int:
    from benchmarks.detection import Harness, Setup
    from metrics.synthetic import recursive_generations

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--window", type=int, default=500)
    p.add_argument("--windows", type=int, default=60)
    p.add_argument("--planted", type=int, default=20)
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--cost", action="store_true", help="only the cost per stage")
    p.add_argument("--topic-sweep", action="store_true",
                   help="only the topic counts' false and true alarms by sample size")
    p.add_argument("--memory", action="store_true",
                   help="only a worker's memory per stage (a fresh process)")
    p.add_argument("--memory-child", metavar="REF_FILE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    start = time.monotonic()
    if args.memory_child:
        return memory_child(args.memory_child, args.window)
    if args.memory:
        return memory(args.window)
    if args.cost:
        from benchmarks.scoring import Row, render, timed

        print(render(cost_rows(Row, timed, args.window)))
        return 0

    def log(s: str) -> None:
        print(f"[{time.monotonic() - start:6.0f}s] {s}", file=sys.stderr)

    setup = Setup(window=args.window, windows=args.windows, replicates=args.replicates)
    harness = Harness(setup, log)
    log("reference built")
    if args.topic_sweep:
        print(topic_sample_sweep(harness, (256, 320, 384, 448, 512)))
        return 0
    gens = recursive_generations(harness.train, setup.generations, "replace", seed=setup.seed)
    tiny = recursive_generations(harness.train, setup.generations, "replace", seed=setup.seed,
                                 docs_per_generation=setup.tiny_budget)
    tables = scenarios(harness, gens, tiny, windows=args.windows, planted=args.planted, log=log)
    print(f"# Semantic validation (window {setup.window} documents, {setup.replicates} band "
          f"replicates; effect sizes in band sd, + = collapse direction)\n")
    for t in tables:
        print(t.render())
        print()
    failed = [text for t in tables for text, ok in t.checks if not ok]
    print(f"{sum(len(t.checks) for t in tables) - len(failed)} checks pass, {len(failed)} fail; "
          f"{time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
