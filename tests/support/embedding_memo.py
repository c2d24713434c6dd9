"""A per-text memo of the real embedding model's vectors, for the test processes.

Many fixtures embed the same shipped fortunes (every reference, baseline and window built
from them), and embedding is most of their set-up time. The model's vector of a text does
not depend on the batch it is embedded with (checked when the memo is installed: a probe
embedded together and one text at a time must give bit-identical vectors, else the memo
stays off), so a text embedded once can be answered from memory afterwards with exactly the
vector the model gives. Only texts the memo has not seen reach the model, in one call.

It wraps :meth:`metrics.embedding.OnnxEmbedder.embed` in this process only: servers, CLI
runs and workers the tests start embed with the model as always. Tests of the embedder
itself (:data:`BYPASS`) run without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

# test files that exercise the embedder or its caches: they always reach the model
BYPASS = frozenset({
    "test_embedding.py",
    "test_cli_embedding_cache.py",
    "test_cli_offline_embedding.py",
})
MAX_ENTRIES = 400_000  # ~0.6 GB of 384-wide float32 rows at most; beyond, no new entries

_PROBE = ["a short one", "the cat sat on the mat " * 6, "rain again today",
          "markets fell sharply after the announcement " * 4]


class _Memo:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, int, str], np.ndarray] = {}
        self.lock = threading.Lock()
        self.active = True  # off while a BYPASS file's tests run
        self.hits = self.misses = 0


MEMO = _Memo()
_installed = False


def _batch_independent(embed, embedder) -> bool:
    together = embed(embedder, _PROBE)
    alone = np.vstack([embed(embedder, [t]) for t in _PROBE])
    return bool(np.array_equal(together, alone))


def install() -> bool:
    """Wrap OnnxEmbedder.embed with the memo; False when no model loads here or its vectors
    depend on their batch (then nothing is wrapped)."""
    global _installed
    if _installed:
        return True
    try:
        from metrics.embedding import OnnxEmbedder, shared_embedder
    except ImportError:
        return False
    model, _ = shared_embedder()  # (None, reason) when no model loads here
    if not isinstance(model, OnnxEmbedder):
        return False
    original = OnnxEmbedder.embed
    if not _batch_independent(original, model):
        log.warning("embedding memo off: the model's vectors depend on their batch")
        return False

    def embed(self: OnnxEmbedder, texts: Sequence[str]) -> np.ndarray:
        identity = getattr(self, "identity", None)  # unset while the model loads
        texts = [str(t) for t in texts]
        if not MEMO.active or identity is None or not texts:
            return original(self, texts)
        scope = (identity, self.max_tokens)
        with MEMO.lock:
            found = [MEMO.rows.get((*scope, t)) for t in texts]
        missing = list(dict.fromkeys(t for t, row in zip(texts, found) if row is None))
        computed = dict(zip(missing, original(self, missing))) if missing else {}
        with MEMO.lock:
            MEMO.hits += len(texts) - len(missing)
            MEMO.misses += len(missing)
            for t, row in list(computed.items())[:max(MAX_ENTRIES - len(MEMO.rows), 0)]:
                kept = row.copy()
                kept.setflags(write=False)
                MEMO.rows[(*scope, t)] = kept
        return np.vstack([row if row is not None else computed[t]
                          for t, row in zip(texts, found)])

    OnnxEmbedder.embed = embed
    _installed = True
    return True
