"""Write tests/fixtures/peer_values.json: shared inputs and the values the peers give on them.

    .venv/bin/python -m benchmarks.peers.make_fixture [--output PATH]

Installs each peer in its own venv on first use (see envs.py; needs the package registry),
then runs every peer on every document set of inputs.py. Besides the peers' own numbers the
fixture stores a few reference values computed here in plain Python where a peer's definition
differs from ours on purpose (distinct-n inside documents, exact Jaccard, one-pass gzip); the
test explains each comparison.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from benchmarks.peers import envs
from benchmarks.peers.inputs import TOKENIZER_DESCRIPTION, Tokens, document_sets

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "peer_values.json"

MAX_N = 4
SELF_REPETITION_N = 4
NEAR_DUP = {"threshold": 0.8, "num_perm": 128, "shingle": 5, "seed": 1}
# Pairs whose exact Jaccard lies in this interval may fall on either side of 0.8 in any
# 128-permutation MinHash + LSH: the estimate's standard error is sqrt(J(1-J)/128) ~ 0.035 at
# 0.8, so 0.65 is > 4 SE below, and at 0.95 even a (b=9, r=13) LSH misses a pair with p < 0.002.
GRAY_ZONE = (0.65, 0.95)
MATTR_WINDOW = 100
EDGE_MATTR_WINDOW = 5


def _texts(docs: list[Tokens]) -> list[str]:
    return [" ".join(doc) for doc in docs]


def distinct_within_documents(docs: list[Tokens], n: int) -> float:
    """Li et al. 2016 distinct-n with n-grams taken inside each document."""
    grams = [tuple(doc[i : i + n]) for doc in docs for i in range(len(doc) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def shingles(doc: Tokens, size: int) -> set[str]:
    """Word ``size``-gram shingles; a shorter non-empty document is one shingle."""
    if not doc:
        return set()
    if len(doc) < size:
        return {" ".join(doc)}
    return {" ".join(doc[i : i + size]) for i in range(len(doc) - size + 1)}


def exact_near_duplicates(docs: list[Tokens]) -> dict:
    """Near-duplicate rate with exact Jaccard over all pairs (fine for a few hundred docs)."""
    sets = [shingles(doc, NEAR_DUP["shingle"]) for doc in docs]
    best = [0.0] * len(docs)
    for i, j in itertools.combinations(range(len(docs)), 2):
        if sets[i] and sets[j]:
            jac = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
            best[i], best[j] = max(best[i], jac), max(best[j], jac)
    low, high = GRAY_ZONE
    return {
        "exact_rate": sum(b >= NEAR_DUP["threshold"] for b in best) / len(docs),
        "gray_zone": list(GRAY_ZONE),
        "gray_documents": sum(low <= b < high for b in best),
        "best_jaccard": [round(b, 6) for b in best],
    }


def peer_requests(docs: list[Tokens]) -> dict[str, list[dict]]:
    """What each peer computes on one document set."""
    texts = _texts(docs)
    flat = [token for doc in docs for token in doc]
    window = EDGE_MATTR_WINDOW if len(flat) < MATTR_WINDOW else MATTR_WINDOW
    return {
        "diversity": [
            {"op": "distinct_stream", "docs": texts, "max_n": MAX_N},
            {"op": "self_repetition", "docs": texts, "n": SELF_REPETITION_N},
            {"op": "compression", "docs": texts},
        ],
        "nltk": [{"op": "self_bleu", "docs": texts}],
        "datasketch": [{"op": "near_duplicates", "docs": texts, **NEAR_DUP}],
        "lexicalrichness": [{"op": "mattr", "tokens": flat, "window": window}],
    }


def values_for(docs: list[Tokens], answers: dict[str, list[dict]]) -> dict:
    """The fixture entry of one document set from the peers' answers."""
    stream, repetition, compression = answers["diversity"]
    (bleu,) = answers["nltk"]
    (sketch,) = answers["datasketch"]
    (richness,) = answers["lexicalrichness"]
    return {
        "distinct": {
            "peer_stream": stream["per_n"],
            "peer_public_rounded_cumulative": stream["public_rounded_cumulative"],
            "within_documents": {
                str(n): distinct_within_documents(docs, n) for n in range(1, MAX_N + 1)
            },
        },
        "self_repetition": {"n": SELF_REPETITION_N, "peer": repetition["value"]},
        "self_bleu": {
            "max_n": 4,
            "peer_mean": bleu["mean"],
            "peer_per_document": bleu["per_document"],
        },
        "near_duplicates": {
            **NEAR_DUP,
            **exact_near_duplicates(docs),
            "datasketch_verified_rate": sketch["verified_rate"],
            "datasketch_candidate_rate": sketch["candidate_rate"],
            "datasketch_lsh_bands_rows": sketch["lsh_params"],
        },
        "mattr": {"window": richness["window"], "peer": richness["value"]},
        "compression": {
            "peer_public_rounded": compression["public_rounded"],
            "original_bytes": compression["original_bytes"],
            "peer_double_gzip_bytes": compression["double_gzip_bytes"],
            "peer_double_gzip_ratio": compression["double_gzip_ratio"],
            "single_gzip_bytes": compression["single_gzip_bytes"],
            "single_gzip_ratio": compression["single_gzip_ratio"],
        },
    }


def build() -> dict:
    sets = document_sets()
    requests = {name: peer_requests(docs) for name, (_, docs) in sets.items()}
    answers: dict[str, dict[str, list[dict]]] = {name: {} for name in sets}
    for peer in envs.PEERS:
        print(f"running {peer} on {len(sets)} document sets", file=sys.stderr)
        batch = [item for name in sets for item in requests[name][peer]]
        flat = iter(envs.run_batch(peer, batch))
        for name in sets:
            answers[name][peer] = [next(flat) for _ in requests[name][peer]]
    return {
        "generated_by": "python -m benchmarks.peers.make_fixture",
        "tokenizer": TOKENIZER_DESCRIPTION,
        "peers": {peer: envs.versions(peer) for peer in envs.PEERS},
        "sets": {
            name: {"description": description, "documents": docs, **values_for(docs, answers[name])}
            for name, (description, docs) in sets.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=FIXTURE)
    args = parser.parse_args(argv)
    fixture = build()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, ensure_ascii=False, separators=(",", ":"))
    args.output.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.output} ({len(text.encode()) / 1e3:.0f} kB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
