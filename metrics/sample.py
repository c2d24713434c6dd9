"""Encoded document collections: the integer form every metric works on.

A :class:`Corpus` holds documents as one array of vocabulary indexes plus offsets, the
vocabulary strings (for the compression metric) and their 64-bit ids. A :class:`Sample`
is a set of documents drawn from a corpus (a window, or a band replicate) with two views:

* the *document view*: all its documents, whole (duplicates, Self-BLEU, typicality);
* the *budget view*: the first ``budget`` tokens in the sample's document order, the last
  document cut (token-count metrics: distinct-n, entropy, tail coverage, ...).

Windows are put in a canonical order (by content hash) before the budget cut, so the
score does not depend on the order documents arrive in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from metrics.kernels import unique_counts
from metrics.text import hash_tokens, ngram_keys, whole_sequence_keys


@dataclass(frozen=True)
class Corpus:
    vocab: tuple[str, ...]
    vocab_ids: np.ndarray  # uint64, id of each vocabulary string
    index: np.ndarray  # int32 vocabulary index of every token, documents concatenated
    offsets: np.ndarray  # int64, documents + 1

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    def words(self) -> np.ndarray:
        """The vocabulary as an object array (for joining tokens back into text)."""
        cached = self.__dict__.get("_words")
        if cached is None:
            cached = np.asarray(self.vocab, dtype=object)
            object.__setattr__(self, "_words", cached)
        return cached

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_tokens(cls, docs: Sequence[Sequence[str]]) -> Corpus:
        vocab: dict[str, int] = {}
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        index = np.fromiter(
            (vocab.setdefault(t, len(vocab)) for d in docs for t in d),
            dtype=np.int32,
            count=int(lengths.sum()),
        )
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        words = tuple(vocab)
        return cls(words, hash_tokens(words), index, offsets)

    def doc_keys(self) -> np.ndarray:
        """One uint64 key per document for its whole token sequence."""
        return whole_sequence_keys(self.vocab_ids[self.index], self.offsets)

    def take(self, docs: np.ndarray) -> Corpus:
        """The documents at the given positions (repeats allowed), sharing the vocabulary."""
        lengths = self.lengths[docs]
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        starts = self.offsets[:-1][docs]
        pos = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        out = Corpus(self.vocab, self.vocab_ids, self.index[pos], offsets)
        object.__setattr__(out, "_words", self.words())
        return out


@dataclass
class Sample:
    """Documents to score, with lazily computed and memoised intermediate arrays.

    ``budget_source`` is where the budget view's tokens come from: the documents
    themselves for a window; for a band replicate, as many random calibration documents
    as it takes to reach the window's token budget (human documents may be shorter or
    longer than the model's, so the replicate matches documents *and* tokens).
    """

    docs: Corpus
    budget_tokens: int
    doc_keys: np.ndarray  # uint64 whole-document keys (exact duplicates)
    budget_source: Corpus | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_docs(self) -> int:
        return self.docs.n_docs

    def ids(self) -> np.ndarray:
        if "ids" not in self._cache:
            self._cache["ids"] = self.docs.vocab_ids[self.docs.index]
        return self._cache["ids"]

    def budget(self) -> Corpus:
        """The first ``budget_tokens`` tokens of the budget source, the last document cut."""
        if "budget" not in self._cache:
            src = self.budget_source if self.budget_source is not None else self.docs
            off = src.offsets
            b = min(self.budget_tokens, int(off[-1]))
            k = int(np.searchsorted(off, b, side="left"))  # off[k] >= b
            new_off = np.minimum(off[: k + 1], b).astype(np.int64)
            budget = Corpus(src.vocab, src.vocab_ids, src.index[:b], new_off)
            object.__setattr__(budget, "_words", src.words())
            self._cache["budget"] = budget
        return self._cache["budget"]

    def budget_ids(self) -> np.ndarray:
        if "budget_ids" not in self._cache:
            b = self.budget()
            self._cache["budget_ids"] = b.vocab_ids[b.index]
        return self._cache["budget_ids"]

    def ngrams(self, view: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, document) of the n-grams of a view ("docs" or "budget")."""
        key = ("ngrams", view, n)
        if key not in self._cache:
            if view == "docs":
                self._cache[key] = ngram_keys(self.ids(), self.docs.offsets, n)
            else:
                self._cache[key] = ngram_keys(self.budget_ids(), self.budget().offsets, n)
        return self._cache[key]

    def counts(self, view: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(distinct keys sorted, counts) of the n-grams of a view."""
        key = ("counts", view, n)
        if key not in self._cache:
            keys, _ = self.ngrams(view, n)
            self._cache[key] = unique_counts(keys)
        return self._cache[key]

    def memo(self, name: str, fn):
        if name not in self._cache:
            self._cache[name] = fn()
        return self._cache[name]
