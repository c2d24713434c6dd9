"""Offline CLI speed: ``collapsewatch score`` on a window of human documents, whole process.

    .venv/bin/python -m benchmarks.cli [--documents 1000] [--configs lexical,default,model]
                                       [--repeats 3] [--work DIR] [--no-breakdown]
                                       [--large 32000 [--large-replicates 10]]

The window is ``--documents`` fortunes (the shipped sample, seed 7) that the reference did
not see; the reference is built from 12,000 other fortunes with the default settings
(bands stored at `reference build`'s default sizes, 200 replicates: a window between two
of them gets an interpolated band, e.g. ``--documents 1400``). Three configurations:

* ``lexical``: a reference built without an embedding model (no semantic metrics, nothing
  embedded at score time);
* ``default``: the default settings: the pinned embedding model, found in its package;
* ``model``: ``COLLAPSEWATCH_EMBEDDING_MODEL`` and ``_TOKENIZER`` set (to the same model's
  files, so the numbers compare; the reference is built under the same settings).

References are built once into ``--work`` (default ``$TMPDIR/collapsewatch-bench-cli``)
and reused by later runs (~2.5 min each with embeddings), until the metric suite changes.

For each configuration it times the whole process ``collapsewatch score --reference R
window.txt --format json`` (wall seconds and the child's CPU seconds, user + system, from
``getrusage``): *first* with an empty ``XDG_CACHE_HOME`` (no cached band, no cached
embedding), then *repeated* (the same cache, median of ``--repeats``). Then, unless
``--no-breakdown``, a fresh process runs the same steps one by one with an empty cache and
reports each: interpreter start, imports, reference load, embedding model load, reading and
encoding the window, embedding the window, the window's metrics (lexical and semantic), the
band (lexical and semantic metric time over all replicates, summed over its threads), the
comparison with the band, the evidence, the semantic fields. The table gives the ratio to
the targets (first <= 3 s, repeated <= 1 s for 1,000 documents; a first band <= 10x the
window's own scoring). The first output line gives the load average: on a shared machine
wall time also measures the other processes.

``--large N`` adds the first score of an N-document window (drawn with replacement from the
held-out fortunes: there are only ~3,200): the whole process and its steps as measured (a
window above every stored size gets a band extended from the largest stored one, see
:func:`metrics.bands.extend`), beside the same steps with the band computed in full,
timed on ``--large-replicates`` replicates and scaled to the reference's 200 (a band's
cost is linear in its replicates).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_FIRST_SECONDS = 3.0
TARGET_REPEATED_SECONDS = 1.0
TARGET_BAND_FACTOR = 10.0
REFERENCE_DOCUMENTS = 12_000
SEED = 7
CONFIGS = ("lexical", "default", "model")
PYTHON = sys.executable
CLI = str(Path(sys.executable).parent / "collapsewatch")


# ---------------------------------------------------------------------------- set-up


def prepare(work: Path, n_docs: int) -> tuple[Path, Path]:
    """(reference source, window) text files: one document per line, disjoint."""
    import random

    from service.demo.sample_data import human_documents

    docs = [" ".join(d.split()) for d in human_documents()]
    random.Random(SEED).shuffle(docs)
    if REFERENCE_DOCUMENTS + n_docs > len(docs):
        raise SystemExit(f"only {len(docs) - REFERENCE_DOCUMENTS} fortunes are left for the "
                         f"window; ask for fewer --documents")
    src = work / "reference.txt"
    if not src.exists():
        src.write_text("\n".join(docs[:REFERENCE_DOCUMENTS]))
    window = work / f"window-{n_docs}.txt"
    if not window.exists():
        window.write_text("\n".join(docs[REFERENCE_DOCUMENTS:REFERENCE_DOCUMENTS + n_docs]))
    return src, window


def prepare_large(work: Path, n_docs: int) -> Path:
    """A window of ``n_docs`` documents drawn *with replacement* (seed 7) from the fortunes
    the reference did not see: there are not that many distinct ones, so it repeats
    documents (its sameness is not human-like) but costs what a window of that many
    fortune-length documents costs."""
    import random

    from service.demo.sample_data import human_documents

    docs = [" ".join(d.split()) for d in human_documents()]
    random.Random(SEED).shuffle(docs)
    held = docs[REFERENCE_DOCUMENTS:]
    window = work / f"window-large-{n_docs}.txt"
    if not window.exists():
        rng = random.Random(SEED)
        window.write_text("\n".join(rng.choice(held) for _ in range(n_docs)))
    return window


def model_env() -> dict[str, str]:
    from metrics.embedding import default_model_files

    model, tokenizer = default_model_files()
    return {"COLLAPSEWATCH_EMBEDDING_MODEL": str(model),
            "COLLAPSEWATCH_EMBEDDING_TOKENIZER": str(tokenizer)}


def config_env(config: str, xdg: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COLLAPSEWATCH_") or k == "COLLAPSEWATCH_LOG_LEVEL"}
    env["XDG_CACHE_HOME"] = str(xdg)
    if config == "model":
        env.update(model_env())
    return env


def build_reference(work: Path, src: Path, config: str) -> Path:
    import hashlib

    from metrics.bands import BAND_DRAW
    from metrics.registry import METRIC_SUITE
    from service.cli.offline import DEFAULT_BAND_SIZES

    grid = "-".join(map(str, DEFAULT_BAND_SIZES))
    # a reference built by another metric suite or draw has no usable stored bands (they
    # are dropped on load): the file name says which suite it was built by
    suite = hashlib.sha256(json.dumps([list(METRIC_SUITE), BAND_DRAW]).encode()).hexdigest()
    out = work / f"reference-{config}-{grid}-{suite[:10]}.cwp"
    if out.exists():
        return out
    print(f"building the {config} reference into {out} (once)", flush=True)
    with tempfile.TemporaryDirectory() as xdg:
        env = config_env(config, Path(xdg))
        if config == "lexical":
            code = ("import sys, metrics\n"
                    "docs = open(sys.argv[1]).read().splitlines()\n"
                    "cfg = metrics.ReferenceConfig(band_sizes=tuple(map(int, sys.argv[3:])))\n"
                    "p = metrics.build_reference(docs, 'fortunes', config=cfg, embedder=None)\n"
                    "metrics.save_profile(p, sys.argv[2])\n")
            cmd = [PYTHON, "-c", code, str(src), str(out), *map(str, DEFAULT_BAND_SIZES)]
        else:
            cmd = [CLI, "reference", "build", str(src), "--name", "fortunes", "-o", str(out)]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return out


# ---------------------------------------------------------------------------- whole process


def timed_run(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds (user + system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "stdout": done.stdout}


def score_cmd(reference: Path, window: Path) -> list[str]:
    return [CLI, "score", "--reference", str(reference), str(window), "--format", "json"]


def whole_process(reference: Path, window: Path, config: str, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as xdg:
        env = config_env(config, Path(xdg))
        first = timed_run(score_cmd(reference, window), env)
        again = [timed_run(score_cmd(reference, window), env) for _ in range(repeats)]
        # the same numbers from the cache as computed: a cache that changed them is a bug
        if json.loads(again[-1]["stdout"]) != json.loads(first["stdout"]):
            raise SystemExit(f"{config}: the repeated score differs from the first one")
        health = json.loads(first["stdout"])["health"]
    return {
        "first": {"wall": first["wall"], "cpu": first["cpu"]},
        "repeated": {"wall": statistics.median(r["wall"] for r in again),
                     "cpu": statistics.median(r["cpu"] for r in again)},
        "health": health,
    }


# ---------------------------------------------------------------------------- breakdown


def interpreter_start() -> dict[str, float]:
    runs = [timed_run([PYTHON, "-c", "pass"], dict(os.environ)) for _ in range(3)]
    return {"wall": statistics.median(r["wall"] for r in runs),
            "cpu": statistics.median(r["cpu"] for r in runs)}


class _Clock:
    """Wall and process-CPU seconds of consecutive steps."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float]] = {}
        self._t = (time.perf_counter(), time.process_time())

    def lap(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.steps[name] = {"wall": now[0] - self._t[0], "cpu": now[1] - self._t[1]}
        self._t = now


def _timed_registry(plain: tuple, acc: dict[str, float]) -> tuple:
    """``plain`` (the registry) with every metric's function timed (thread CPU seconds,
    summed per metric kind across threads: band replicates run on several threads)."""
    import dataclasses

    def wrap(spec):
        kind = "semantic" if "embedding" in spec.cost else "lexical"

        def fn(sample, ctx):
            t = time.thread_time()
            try:
                return spec.fn(sample, ctx)
            finally:
                acc[kind] = acc.get(kind, 0.0) + time.thread_time() - t

        return dataclasses.replace(spec, fn=fn)

    return tuple(wrap(spec) for spec in plain)


def stages(reference_path: str, window_path: str, replicates: int | None = None) -> dict:
    """The steps of ``collapsewatch score`` one by one, in this (fresh) process. With
    ``replicates``, the band is computed with that many replicates only (its time scales
    linearly with them; the report extrapolates to the reference's own number)."""
    import dataclasses

    clock = _Clock()
    import service.cli
    service.cli.build_parser()
    import metrics
    from metrics import registry, scoring
    from metrics.sample import Sample
    from metrics.semantic import score_fields, window_vectors
    from service.cli import offline
    clock.lap("imports")
    reference = offline._load(reference_path, "reference", band_context="reference")
    full_replicates = reference.config.replicates
    if replicates:
        reference.config = dataclasses.replace(reference.config, replicates=replicates)
    clock.lap("reference load")
    if reference.semantic is not None:  # as collapsewatch score: no model for a lexical one
        reference.use_embedder(*offline._embedder())
    ctx = reference.context()
    clock.lap("embedding model load")
    docs = offline.read_all([window_path], "text")
    corpus, keys, texts = scoring.encode_window_texts(docs, reference)
    cfg = metrics.ScoreConfig()
    n_docs, tokens = corpus.n_docs, int(corpus.offsets[-1])
    budget = scoring.snap_budget(tokens, cfg.token_budget)
    sample = Sample(corpus, budget, keys)
    clock.lap("read + encode window")
    if ctx.semantic is not None and ctx.semantic.embedder is not None:
        window_vectors(sample, ctx.semantic)
    clock.lap("embed window")
    window_kinds: dict[str, float] = {}
    band_kinds: dict[str, float] = {}
    plain = registry.REGISTRY
    registry.REGISTRY = _timed_registry(plain, window_kinds)
    values = registry.compute_all(sample, ctx)
    clock.lap("window metrics")
    if replicates:
        # the band's fixed costs (MinHash signatures and n-gram groups of the whole pool),
        # timed apart so that only the per-replicate part is scaled
        from metrics.bands import _pool_groups
        from metrics.registry import minhash_of

        minhash_of(Sample(reference.pool, 0, reference.pool_doc_keys), ctx)
        _pool_groups(reference.pool, reference.pool_doc_keys, ctx)
        clock.lap("pool signatures")
    registry.REGISTRY = _timed_registry(plain, band_kinds)
    # as metrics.score: interpolated between stored sizes when they bracket the window
    band, origin = reference.band_with_origin(n_docs, budget)
    registry.REGISTRY = plain
    clock.lap("band")
    cal = scoring.calibrate(band, reference.pool, n_docs, budget, "pool",
                            interpolated_from=origin,
                            sample_docs=reference.config.suite.semantic_sample)
    human = scoring._Comparison(values, cal, n_docs, cfg)
    scoring.health_state(human.bands(), None, cfg)
    clock.lap("compare with band")
    scoring.window_evidence(sample, reference, None, texts=texts, quote_text=True)
    clock.lap("evidence")
    score_fields(sample, reference, None)
    clock.lap("semantic fields")
    return {"steps": clock.steps, "window_kinds": window_kinds, "band_kinds": band_kinds,
            "documents": n_docs, "budget": budget,
            "interpolated_from": cal.to_json()["interpolated_from"],
            "extended_from": cal.to_json()["extended_from"],
            "replicates": reference.config.replicates, "full_replicates": full_replicates}


def breakdown(reference: Path, window: Path, config: str,
              replicates: int | None = None) -> dict[str, dict]:
    """The steps in a fresh process with an empty cache ("first"), then in another fresh
    process with the cache the first one left ("repeat")."""
    out = {}
    extra = ["--stages-replicates", str(replicates)] if replicates else []
    with tempfile.TemporaryDirectory() as xdg:
        env = config_env(config, Path(xdg))
        for run in ("first", "repeat"):
            done = subprocess.run(
                [PYTHON, "-m", "benchmarks.cli", "--stages-of", str(reference), str(window),
                 *extra],
                env=env, capture_output=True, check=False, cwd=Path(__file__).parents[1])
            if done.returncode != 0:
                raise SystemExit(f"breakdown failed: {done.stderr.decode()[-2000:]}")
            out[run] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return out


# ---------------------------------------------------------------------------- report


def _t(x: dict[str, float]) -> str:
    return f"{x['wall']:7.2f} {x['cpu']:7.2f}"


def report(n_docs: int, results: dict, parts: dict, start: dict | None) -> None:
    print(f"\nwhole process: collapsewatch score, {n_docs} documents "
          f"(seconds: wall, CPU; ratio = wall / target)")
    print(f"{'config':<9}{'first wall':>11}{'cpu':>8}{'x target':>9}"
          f"{'repeat wall':>13}{'cpu':>8}{'x target':>9}  health")
    scale = n_docs / 1000  # the targets are for 1,000 documents
    for config, r in results.items():
        f, a = r["first"], r["repeated"]
        print(f"{config:<9}{f['wall']:>11.2f}{f['cpu']:>8.2f}"
              f"{f['wall'] / (TARGET_FIRST_SECONDS * scale):>9.2f}"
              f"{a['wall']:>13.2f}{a['cpu']:>8.2f}"
              f"{a['wall'] / (TARGET_REPEATED_SECONDS * scale):>9.2f}  {r['health']}")
    if not parts:
        return
    print("\nbreakdown in a fresh process: first (empty cache), then repeat (wall, CPU seconds)")
    cols = {f"{config} {run}": p for config, runs in parts.items() for run, p in runs.items()}
    names = list(next(iter(cols.values()))["steps"])
    print(f"{'step':<24}" + "".join(f"{c:>16}" for c in cols))
    if start is not None:
        print(f"{'interpreter start':<24}" + "".join(f"{_t(start):>16}" for _ in cols))
    for name in names:
        print(f"{name:<24}" + "".join(f"{_t(p['steps'][name]):>16}" for p in cols.values()))
    total = {c: {k: sum(s[k] for s in p["steps"].values()) for k in ("wall", "cpu")}
             for c, p in cols.items()}
    print(f"{'sum of steps':<24}" + "".join(f"{_t(t):>16}" for t in total.values()))
    for label, key in (("window metrics", "window_kinds"), ("band metrics", "band_kinds")):
        for kind in ("lexical", "semantic"):
            print(f"  {label + ' ' + kind + ' cpu':<22}"
                  + "".join(f"{p[key].get(kind, 0.0):>16.2f}" for p in cols.values()))
    print(f"{'band / window metrics':<24}" + "".join(
        f"{p['steps']['band']['cpu'] / max(p['steps']['window metrics']['cpu'], 1e-9):>15.1f}x"
        for p in cols.values()) + f"   (first: target <= {TARGET_BAND_FACTOR:.0f}x, CPU)")
    print(f"{'band':<24}" + "".join(
        f"{'interpolated' if p.get('interpolated_from') else 'extended' if p.get('extended_from') else 'computed/read':>16}"
        for p in cols.values()))


def report_large(n_docs: int, whole: dict[str, dict], parts: dict[str, dict],
                 computed: dict[str, dict]) -> None:
    """The first score of a large window: the whole process and its steps as measured (the
    band extended from the largest stored one), beside the same steps with the band
    computed in full, extrapolated from a few replicates (its cost is linear in them)."""
    reps = next(iter(computed.values()))["replicates"]
    print(f"\nfirst score of a {n_docs}-document window (wall, CPU seconds): 'extended' as "
          f"measured; 'computed' with the band computed in full, timed on {reps} replicates "
          f"and scaled")
    cols = [(c, kind) for c in parts for kind in ("extended", "computed")]
    print(f"{'step':<24}" + "".join(f"{c + ' ' + k:>20}" for c, k in cols))
    names = list(next(iter(parts.values()))["steps"])
    totals: dict[tuple[str, str], dict[str, float]] = {}
    bands: dict[tuple[str, str], dict[str, float]] = {}
    for c, p in parts.items():
        q = computed[c]
        factor = q["full_replicates"] / q["replicates"]
        band, fixed = q["steps"]["band"], q["steps"]["pool signatures"]
        bands[(c, "computed")] = {k: fixed[k] + max(band[k] - fixed[k], 0.0) * factor
                                  for k in band}
        bands[(c, "extended")] = p["steps"]["band"]
        for kind, steps in (("extended", p["steps"]), ("computed", q["steps"])):
            totals[(c, kind)] = {k: sum(s[k] for n, s in steps.items()
                                        if n not in ("band", "pool signatures"))
                                 + bands[(c, kind)][k] for k in ("wall", "cpu")}
    for name in names:
        if name == "band":
            print(f"{'band':<24}" + "".join(f"{_t(bands[key]):>20}" for key in cols))
            continue
        print(f"{name:<24}" + "".join(
            f"{_t((parts if k == 'extended' else computed)[c]['steps'].get(name, {'wall': 0, 'cpu': 0})):>20}"
            for c, k in cols))
    print(f"{'sum of steps':<24}" + "".join(f"{_t(totals[key]):>20}" for key in cols))
    print(f"{'whole process (first)':<24}" + "".join(
        f"{_t(whole[c]) if k == 'extended' else '':>20}" for c, k in cols)
        + "   (target: 30 s wall)")
    print(f"{'band / window metrics':<24}" + "".join(
        f"{bands[(c, k)]['cpu'] / max(parts[c]['steps']['window metrics']['cpu'], 1e-9):>19.1f}x"
        for c, k in cols) + f"   (target <= {TARGET_BAND_FACTOR:.0f}x, CPU)")
    for c in parts:
        print(f"{c}: band extended from {parts[c]['extended_from']}; computed / extended "
              f"band wall {bands[(c, 'computed')]['wall'] / max(bands[(c, 'extended')]['wall'], 1e-9):.1f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--documents", type=int, default=1000)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "collapsewatch-bench-cli"))
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--large", type=int, default=0, metavar="N",
                    help="also break down the first score of an N-document window (drawn "
                         "with replacement), its band timed on --large-replicates replicates")
    ap.add_argument("--large-replicates", type=int, default=10)
    ap.add_argument("--stages-of", nargs=2, metavar=("REFERENCE", "WINDOW"),
                    help=argparse.SUPPRESS)  # the breakdown's child process
    ap.add_argument("--stages-replicates", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stages_of:
        print(json.dumps(stages(*args.stages_of, replicates=args.stages_replicates)))
        return 0
    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        ap.error(f"unknown configs {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, "
          f"{os.cpu_count()} CPUs", flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src, window = prepare(work, args.documents)
    references = {c: build_reference(work, src, c) for c in configs}
    results, parts = {}, {}
    for config in configs:
        results[config] = whole_process(references[config], window, config, args.repeats)
        print(f"{config}: first {_t(results[config]['first'])}, "
              f"repeated {_t(results[config]['repeated'])}", flush=True)
        if not args.no_breakdown:
            parts[config] = breakdown(references[config], window, config)
    report(args.documents, results, parts, None if args.no_breakdown else interpreter_start())
    if args.large:
        large = prepare_large(work, args.large)
        whole = {}
        for c in configs:
            with tempfile.TemporaryDirectory() as xdg:
                whole[c] = timed_run(score_cmd(references[c], large), config_env(c, Path(xdg)))
        report_large(args.large, whole,
                     {c: breakdown(references[c], large, c)["first"] for c in configs},
                     {c: breakdown(references[c], large, c, args.large_replicates)["first"]
                      for c in configs})
    print(f"\nload average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
