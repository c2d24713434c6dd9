"""A seeded word n-gram generator retrained on its own samples: collapsing text on demand.

The recursive-training setting of Shumailov et al. (2024, "AI models collapse when trained
on recursively generated data") with a word n-gram model (trigram by default):

* generation 0 is trained on human documents;
* "replace": generation g is trained only on samples of generation g-1;
* "accumulate" (Gerstgrasser et al. 2024): generation g is trained on the human documents
  plus the samples of every earlier generation.

Sampling has a temperature and a top-k knob, to simulate decoding regressions (a model
served with a narrower decoding setting than it was validated with). Sampling is vectorised
across documents, so generations of thousands of documents take about a second.

    gens = recursive_generations(human_docs, generations=5, regime="replace", seed=0)
    window = gens[3].model.sample(500, seed=42)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metrics.text import TokenizerConfig, combine, tokenize

BOS, EOS = 0, 1
REGIMES = ("replace", "accumulate")


def _tokens(documents: Sequence[str] | Sequence[Sequence[str]], tokenizer: TokenizerConfig):
    return [tokenize(d, tokenizer) if isinstance(d, str) else list(d) for d in documents]


def _context_keys(columns: np.ndarray) -> np.ndarray:
    """uint64 key of each row of context token indexes (rows = positions)."""
    key = np.full(len(columns), np.uint64(0x51))
    for j in range(columns.shape[1]):
        key = combine(key, columns[:, j].astype(np.uint64))
    return key


@dataclass(frozen=True)
class _Level:
    """Counts of one n-gram order: continuations of each seen context of length order-1."""

    ctx_keys: np.ndarray  # uint64, sorted
    ctx_start: np.ndarray  # int64 range of the context's continuations
    ctx_end: np.ndarray
    ctx_total: np.ndarray  # float64 count of the context
    ctx_types: np.ndarray  # float64 distinct continuations
    nxt: np.ndarray  # int64 continuation token index
    cnt: np.ndarray  # float64 continuation count

    @classmethod
    def count(cls, flat: np.ndarray, targets: np.ndarray, width: int) -> _Level:
        cols = np.stack([flat[targets - width + j] for j in range(width)], axis=1) if width else (
            np.zeros((len(targets), 0), dtype=np.int64)
        )
        ctx = _context_keys(cols)
        nxt = flat[targets]
        order_idx = np.lexsort((nxt, ctx))
        ctx, nxt = ctx[order_idx], nxt[order_idx]
        new = np.r_[True, (ctx[1:] != ctx[:-1]) | (nxt[1:] != nxt[:-1])]
        pair_start = np.flatnonzero(new)
        cnt = np.diff(np.append(pair_start, len(ctx))).astype(np.float64)
        p_ctx, p_nxt = ctx[pair_start], nxt[pair_start]
        c_start = np.flatnonzero(np.r_[True, p_ctx[1:] != p_ctx[:-1]])
        c_end = np.append(c_start[1:], len(p_ctx))
        return cls(
            ctx_keys=p_ctx[c_start],
            ctx_start=c_start.astype(np.int64),
            ctx_end=c_end.astype(np.int64),
            ctx_total=np.add.reduceat(cnt, c_start),
            ctx_types=(c_end - c_start).astype(np.float64),
            nxt=p_nxt,
            cnt=cnt,
        )

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(context index, found) for context keys."""
        idx = np.minimum(np.searchsorted(self.ctx_keys, keys), len(self.ctx_keys) - 1)
        return idx, self.ctx_keys[idx] == keys

    def cumulative(self, temperature: float, top_k: int | None) -> tuple[np.ndarray, ...]:
        """(cum, before, total) sampling tables for a decoding setting."""
        ctx_of = np.repeat(np.arange(len(self.ctx_start)), self.ctx_end - self.ctx_start)
        log_c = np.log(self.cnt)
        peak = np.maximum.reduceat(log_c, self.ctx_start)[ctx_of]
        w = np.exp((log_c - peak) / temperature)
        if top_k is not None:
            # rank within the context: by count, then by token index (deterministic ties)
            srt = np.lexsort((self.nxt, -self.cnt, ctx_of))
            rank = np.empty(len(srt), dtype=np.int64)
            rank[srt] = np.arange(len(srt)) - self.ctx_start[ctx_of[srt]]
            w = np.where(rank < top_k, w, 0.0)
        cum = np.cumsum(w)
        before = np.where(self.ctx_start > 0, cum[np.maximum(self.ctx_start - 1, 0)], 0.0)
        return cum, before, cum[self.ctx_end - 1] - before

    def draw(self, rng, ctx_idx: np.ndarray, tables) -> np.ndarray:
        cum, before, total = tables
        u = before[ctx_idx] + rng.random(len(ctx_idx)) * total[ctx_idx]
        pick = np.searchsorted(cum, u, side="right")
        return self.nxt[np.clip(pick, self.ctx_start[ctx_idx], self.ctx_end[ctx_idx] - 1)]


SMOOTHING = ("witten_bell", "none")


@dataclass(frozen=True)
class NGramModel:
    """Word n-gram model.

    smoothing "witten_bell" (default): interpolated Witten–Bell (Witten & Bell 1991): at
      each step the model uses the order-k distribution with weight c(ctx)/(c(ctx)+T(ctx))
      and backs off to order k-1 otherwise, down to unigrams. It recombines what it saw
      instead of replaying training documents verbatim, as a real model of this size would.
    smoothing "none": maximum likelihood at the full order only (replays long training
      chunks: its samples repeat each other far more than human documents do).
    A word never sampled is gone from the next generation's vocabulary: the tails erode.
    """

    order: int
    smoothing: str
    vocab: tuple[str, ...]  # index 0 = <s>, 1 = </s>
    levels: tuple[_Level, ...]  # levels[k-1] = order k
    max_length: int

    @classmethod
    def train(
        cls,
        documents: Sequence[str] | Sequence[Sequence[str]],
        order: int = 3,
        tokenizer: TokenizerConfig | None = None,
        smoothing: str = "witten_bell",
    ) -> NGramModel:
        """Train on documents (strings are tokenised with the metrics tokenizer). O(order·T log T)."""
        if order < 1:
            raise ValueError("order must be >= 1")
        if smoothing not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {SMOOTHING}, got {smoothing!r}")
        docs = [d for d in _tokens(documents, tokenizer or TokenizerConfig()) if d]
        if not docs:
            raise ValueError("cannot train an n-gram model without any words")
        vocab: dict[str, int] = {"<s>": BOS, "</s>": EOS}
        pad = order - 1
        seqs = [[BOS] * pad + [vocab.setdefault(t, len(vocab)) for t in d] + [EOS] for d in docs]
        flat = np.fromiter((t for s in seqs for t in s), dtype=np.int64)
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        is_target = np.ones(len(flat), dtype=bool)
        for j in range(pad):
            is_target[starts + j] = False
        targets = np.flatnonzero(is_target)
        levels = tuple(_Level.count(flat, targets, k - 1) for k in range(1, order + 1))
        return cls(order, smoothing, tuple(vocab), levels, int(max(len(d) for d in docs)))

    def sample(
        self,
        n_docs: int,
        *,
        seed: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        max_length: int | None = None,
    ) -> list[str]:
        """``n_docs`` documents (tokens joined by spaces); empty ones are redrawn.

        temperature rescales every distribution (p^(1/T)); 0 means greedy. top_k keeps
        the k most frequent continuations of each context.
        """
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        if top_k is not None and top_k < 1:
            raise ValueError("top_k must be >= 1")
        if temperature == 0:
            temperature, top_k = 1.0, 1
        rng = np.random.default_rng(seed)
        limit = max_length or self.max_length
        tables = [lvl.cumulative(temperature, top_k) for lvl in self.levels]
        words = np.asarray(self.vocab, dtype=object)
        out: list[str] = []
        for _ in range(20):  # redraw rounds for documents that ended before any word
            need = n_docs - len(out)
            if need <= 0:
                break
            out.extend(d for d in self._draw(rng, need, limit, tables, words) if d)
        return out[:n_docs]

    def _next(self, rng, ctx: np.ndarray, tables) -> np.ndarray:
        """One token for every row of context (the last order-1 tokens)."""
        m = len(ctx)
        token = np.full(m, -1, dtype=np.int64)
        undecided = np.arange(m)
        for k in range(self.order, 0, -1):
            lvl = self.levels[k - 1]
            keys = _context_keys(ctx[undecided][:, self.order - k :])
            idx, found = lvl.find(keys)
            if k == 1 or self.smoothing == "none":
                use = found
            else:
                lam = lvl.ctx_total[idx] / (lvl.ctx_total[idx] + lvl.ctx_types[idx])
                use = found & (rng.random(len(undecided)) < lam)
            if use.any():
                token[undecided[use]] = lvl.draw(rng, idx[use], tables[k - 1])
            undecided = undecided[~use]
            if len(undecided) == 0:
                break
        token[undecided] = EOS  # unreachable with interpolation; ends the document otherwise
        return token

    def _draw(self, rng, n, limit, tables, words) -> list[str]:
        pad = self.order - 1
        ctx = np.full((n, pad), BOS, dtype=np.int64)
        toks = np.full((n, limit), -1, dtype=np.int64)
        alive = np.arange(n)
        for pos in range(limit):
            if len(alive) == 0:
                break
            token = self._next(rng, ctx[alive], tables)
            done = token == EOS
            keep = alive[~done]
            toks[keep, pos] = token[~done]
            if pad:
                ctx[keep] = np.concatenate([ctx[keep][:, 1:], token[~done][:, None]], axis=1)
            alive = keep
        return [" ".join(words[row[row >= 0]].tolist()) for row in toks]


@dataclass(frozen=True)
class Generation:
    index: int
    model: NGramModel
    samples: list[str]  # what the next generation trains on (replace regime)


def recursive_generations(
    human_documents: Sequence[str],
    generations: int = 5,
    regime: str = "replace",
    *,
    order: int = 3,
    docs_per_generation: int | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    smoothing: str = "witten_bell",
) -> list[Generation]:
    """Generations 0..``generations`` of a model retrained on its own samples.

    Each generation samples ``docs_per_generation`` documents (default: as many as the
    human training set, a realistic budget). Generation g+1 trains on generation g's
    samples ("replace") or on the human documents plus all samples so far ("accumulate").
    """
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    human = _tokens(human_documents, TokenizerConfig())
    size = docs_per_generation or len(human)
    data: list = list(human)
    out: list[Generation] = []
    for g in range(generations + 1):
        model = NGramModel.train(data, order=order, smoothing=smoothing)
        samples = model.sample(size, seed=seed * 1000 + g, temperature=temperature, top_k=top_k)
        out.append(Generation(g, model, samples))
        data = samples if regime == "replace" else data + samples
    return out
