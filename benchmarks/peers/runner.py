"""Runs inside a peer's own venv (see envs.py): one JSON request on stdin, one JSON line out.

Only the standard library and the peer are importable here, never collapsewatch. Documents
arrive as strings of whitespace-separated tokens (the peers split on whitespace), so the peer
sees exactly the tokens stored in the fixture. ``seconds`` ({"wall", "cpu"}) times the peer
call alone.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import sys
import time


def _identity_round(value, ndigits=None):
    return value


def _timed(fn, req: dict):
    """Run ``fn()`` ``req["repeats"]`` times (default 1).

    Returns its last value and the median wall and CPU seconds of one run. CPU seconds
    (time.process_time) stay meaningful on a shared, loaded machine, where wall time is
    inflated by other processes.
    """
    walls, cpus, value = [], [], None
    for _ in range(int(req.get("repeats", 1))):
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    middle = len(walls) // 2
    return value, {"wall": sorted(walls)[middle], "cpu": sorted(cpus)[middle]}


def _import_diversity():
    # diversity runs nltk.download('punkt_tab') at import time (qudsim module); nothing here
    # may reach the internet and none of the metrics used needs punkt, so it is a no-op.
    import nltk

    nltk.download = lambda *args, **kwargs: True
    import diversity

    return diversity


def distinct_stream(req: dict) -> dict:
    """diversity.ngram_diversity_score, per n, unrounded.

    The public function returns round(sum_{k<=n} unique_k/total_k, 3). Shadowing ``round`` in
    its module (module globals are looked up before builtins) exposes the unrounded sum, and
    per-n values are differences of consecutive sums.
    """
    diversity = _import_diversity()
    module = sys.modules["diversity.ngram_diversity"]
    docs, max_n = req["docs"], req["max_n"]
    public, seconds = _timed(lambda: diversity.ngram_diversity_score(docs, max_n), req)
    cumulative = {str(n): diversity.ngram_diversity_score(docs, n) for n in range(1, max_n + 1)}
    module.round = _identity_round
    try:
        sums = [0.0] + [diversity.ngram_diversity_score(docs, n) for n in range(1, max_n + 1)]
    finally:
        del module.round
    per_n = {str(n): sums[n] - sums[n - 1] for n in range(1, max_n + 1)}
    return {
        "per_n": per_n,
        "public_rounded_cumulative": cumulative,
        "public_rounded_sum": public,
        "seconds": seconds,
    }


def self_repetition(req: dict) -> dict:
    diversity = _import_diversity()
    value, seconds = _timed(
        lambda: diversity.self_repetition_score(req["docs"], n=req["n"], verbose=False), req
    )
    return {"value": float(value), "seconds": seconds}


def compression(req: dict) -> dict:
    """diversity.compression_ratio (gzip) plus the one-pass ratio on the same bytes."""
    diversity = _import_diversity()
    docs = req["docs"]
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        public, seconds = _timed(
            lambda: diversity.compression_ratio(docs, algorithm="gzip", verbose=True), req
        )
    # verbose=True prints the sizes once per call; the last pair is the last call's
    sizes = dict(line.split(": ") for line in captured.getvalue().splitlines() if ": " in line)
    original = int(sizes["Original Size"])
    double = int(sizes["Compressed Size"])
    data = " ".join(docs).encode("utf-8")
    single = len(gzip.compress(data, compresslevel=9))
    return {
        "public_rounded": public,
        "original_bytes": original,
        "double_gzip_bytes": double,
        "double_gzip_ratio": original / double,
        "single_gzip_bytes": single,
        "single_gzip_ratio": original / single,
        "seconds": seconds,
    }


def self_bleu(req: dict) -> dict:
    """Self-BLEU-4 (Zhu et al. 2018): each document against all others, nltk method1."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    docs = [doc.split() for doc in req["docs"]]
    limit = req.get("limit") or len(docs)
    smoothing = SmoothingFunction().method1

    def run() -> list[float]:
        scores = []
        for i in range(limit):
            references = docs[:i] + docs[i + 1 :]
            scores.append(float(sentence_bleu(references, docs[i], smoothing_function=smoothing)))
        return scores

    scores, seconds = _timed(run, {"repeats": 1})
    return {"per_document": scores, "mean": sum(scores) / len(scores), "seconds": seconds}


def _shingles(tokens: list[str], size: int) -> set[str]:
    if not tokens:
        return set()
    if len(tokens) < size:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def near_duplicates(req: dict) -> dict:
    """datasketch MinHash + MinHashLSH; a document is a near-duplicate when it has another one
    among its LSH candidates whose MinHash Jaccard estimate reaches the threshold."""
    from datasketch import MinHash, MinHashLSH

    threshold, num_perm = req["threshold"], req["num_perm"]
    docs = [doc.split() for doc in req["docs"]]
    # MinHashLSH's constructor searches (bands, rows) by numerical integration (~1 s); it
    # depends only on (threshold, num_perm), so it is done once, outside the timing.
    params = MinHashLSH(threshold=threshold, num_perm=num_perm)
    bands_rows = (params.b, params.r)

    def flags() -> tuple[set, set]:
        lsh = MinHashLSH(num_perm=num_perm, params=bands_rows)
        sketches = {}
        for i, tokens in enumerate(docs):
            shingles = _shingles(tokens, req["shingle"])
            if not shingles:
                continue  # an empty document has nothing to compare
            sketch = MinHash(num_perm=num_perm, seed=req["seed"])
            sketch.update_batch([s.encode("utf-8") for s in shingles])
            sketches[i] = sketch
            lsh.insert(i, sketch)
        candidate, verified = set(), set()
        for i, sketch in sketches.items():
            others = [j for j in lsh.query(sketch) if j != i]
            if others:
                candidate.add(i)
            if any(sketch.jaccard(sketches[j]) >= threshold for j in others):
                verified.add(i)
        return candidate, verified

    (candidate, verified), seconds = _timed(flags, req)
    n = len(docs)
    return {
        "lsh_params": list(bands_rows),
        "candidate_rate": len(candidate) / n,
        "verified_rate": len(verified) / n,
        "verified_documents": sorted(verified),
        "seconds": seconds,
    }


def mattr(req: dict) -> dict:
    from lexicalrichness import LexicalRichness

    tokens = req["tokens"]
    value, seconds = _timed(
        lambda: LexicalRichness(tokens, preprocessor=None, tokenizer=None).mattr(
            window_size=req["window"]
        ),
        req,
    )
    return {"value": float(value), "window": req["window"], "seconds": seconds}


OPS = {
    "distinct_stream": distinct_stream,
    "self_repetition": self_repetition,
    "compression": compression,
    "self_bleu": self_bleu,
    "near_duplicates": near_duplicates,
    "mattr": mattr,
}


def main() -> None:
    """A request is one operation, or {"batch": [operations]} answered with a list (the
    diversity peer takes ~15 s to import torch and transformers, once per process)."""
    request = json.loads(sys.stdin.read())
    if "batch" in request:
        answer = [OPS[item["op"]](item) for item in request["batch"]]
    else:
        answer = OPS[request["op"]](request)
    sys.stdout.write("\n" + json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
