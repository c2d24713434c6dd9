"""Frozen reference and baseline profiles, and their one-file serialisation.

File layout (all integers little-endian)::

    b"COLLAPSEWATCH-PROFILE\\n"      magic
    uint32                          format version
    32 bytes                        sha256 of the payload (integrity check)
    payload                         an uncompressed ``.npz`` (numpy arrays, no pickles),
                                    with the metadata as a JSON array named "meta"

Uncompressed because most of the payload is 64-bit hashes, which do not compress, and
because loading then costs little more than reading the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from metrics.bands import (
    BAND_DRAW,
    MOMENT_REPLICATES,
    Extended,
    band_matrix,
    extend,
    extension_plan,
)
from metrics.bands import interpolate as interpolate_band
from metrics.config import ReferenceConfig
from metrics.embedding import Embedder, shared_embedder
from metrics.errors import ProfileError
from metrics.lm import ReferenceModel
from metrics.registry import DOC_COLUMNS, METRIC_NAMES, METRIC_SUITE, Context, subsample_docs
from metrics.sample import Corpus
from metrics.semantic import SemanticContext, SemanticProfile

MAGIC = b"COLLAPSEWATCH-PROFILE\n"
FORMAT_VERSION = 1
KINDS = ("reference", "baseline")
_MEMO_LIMIT = 64  # on-demand bands kept in memory per profile


class BandStore(Protocol):
    """Somewhere outside the process to keep computed bands of one profile (the service
    keeps them in its database). Methods return None when they have nothing; a store that
    fails should say so in its own logs and return None: bands can always be computed."""

    def load(self, n_docs: int, budget: int) -> np.ndarray | None: ...

    def load_any(self, n_docs: int) -> np.ndarray | None:
        """Any stored band at ``n_docs`` documents (its "docs" columns are reused)."""

    def save(self, n_docs: int, budget: int, matrix: np.ndarray) -> None: ...

    def stored_keys(self) -> list[tuple[int, int]]:
        """The (documents, budget) of every band held (interpolation sources)."""


@dataclass(eq=False)
class Profile:
    """An immutable reference (human text) or baseline (known-good model outputs).

    sha256 is the hex sha256 of the normalised documents (see
    :func:`metrics.documents_sha256`); the same documents give the same sha256 in the CLI
    and the service. A baseline carries the sha256 of the reference it was built against
    and its signal ratios to that reference (``human_ratios``).
    """

    kind: str
    name: str
    sha256: str
    document_count: int
    token_count: int
    config: ReferenceConfig
    pool: Corpus  # documents the bands are drawn from
    pool_doc_keys: np.ndarray
    pool_doc_nll: np.ndarray  # NaN for empty documents
    model: ReferenceModel | None = None  # reference only
    reference_sha256: str | None = None  # baseline only
    human_ratios: dict[str, float | None] | None = None  # baseline only
    stored_bands: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    _memo: OrderedDict = field(default_factory=OrderedDict, repr=False)
    band_draw: int = BAND_DRAW  # how the stored bands' replicates were drawn
    # bands computed on demand are looked up in and written to this store, if set; it
    # must only hold bands drawn the current way (BAND_DRAW) for this very profile
    band_store: BandStore | None = field(default=None, repr=False)
    _doc_parts: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _computing: dict[tuple[int, int], threading.Event] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _context: Context | None = field(default=None, repr=False)
    _derived: dict = field(default_factory=dict, repr=False)
    # document embeddings and topics (metrics.semantic); None when built without a model
    semantic: SemanticProfile | None = None
    # the model windows are embedded with (see use_embedder); None: the pinned default
    embedder: Embedder | None = field(default=None, repr=False)
    # document counts of the bands the file stores but that were computed by another
    # metric suite (METRIC_SUITE), so were dropped on load: they are recomputed on demand
    stale_band_sizes: tuple[int, ...] = ()
    _embedder_reason: str | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ behaviour

    def context(self) -> Context:
        """Reference-side inputs of the metrics (reference profiles only)."""
        if self.kind != "reference" or self.model is None:
            raise ProfileError(f"profile {self.name!r} is a {self.kind}, not a reference")
        if self._context is None:
            human = self.pool_doc_nll[~np.isnan(self.pool_doc_nll)]
            total = max(self.model.total, 1)
            self._context = Context(
                model=self.model,
                human_nll=np.sort(human),
                suite=self.config.suite,
                ref_prob=self.model.uni_counts / total,
                **self._semantic_context(),
            )
        return self._context

    def use_embedder(self, embedder: Embedder | None, reason: str | None = None) -> None:
        """Embed windows with this model (the one the service or CLI is configured with);
        None with the reason when it could not be loaded. Bands do not need a model: they
        read the stored embeddings."""
        with self._lock:
            self.embedder = embedder
            self._embedder_reason = reason
            self._context = None

    def _semantic_context(self) -> dict:
        """Context fields of the semantic metrics: their inputs, and why windows cannot be
        embedded when they cannot."""
        sem = self.semantic
        if sem is None or sem.centroids is None:
            return {"semantic_unavailable": "the reference profile has no embeddings (built "
                    "without an embedding model); rebuild it with the embeddings extra"}
        embedder, reason = self.embedder, self._embedder_reason
        if embedder is None and reason is None:
            embedder, reason = shared_embedder()
        if embedder is not None and embedder.identity != sem.identity:
            embedder, reason = None, (
                f"the reference was embedded with {sem.identity}, the configured model is "
                f"{embedder.identity}; rebuild the reference with the configured model")
        suite = self.config.suite
        return {"semantic": SemanticContext.of(sem, embedder, suite.semantic_sample,
                                               suite.semantic_knn, suite.topic_sample),
                "semantic_unavailable": reason}

    def pool_vectors(self, reference: Profile) -> np.ndarray | None:
        """Stored embeddings of the band pool, if made with the reference's model."""
        sem, ref = self.semantic, reference.semantic
        if sem is None or ref is None or sem.identity != ref.identity:
            return None
        return sem.pool

    def derived(self, name: object, compute: Callable[[], object]) -> object:
        """``compute()``, once per process and ``name``: arrays derived from this immutable
        profile (the evidence background's n-gram counts), kept as long as the profile."""
        with self._lock:
            if name in self._derived:
                return self._derived[name]
        value = compute()  # outside the lock: two threads may compute it, one value is kept
        with self._lock:
            return self._derived.setdefault(name, value)

    def band_with_origin(self, n_docs: int, budget: int, reference: Profile | None = None,
                         interpolate: bool = True
                         ) -> tuple[np.ndarray, list[tuple[int, int]] | Extended | None]:
        """:meth:`band`, or with ``interpolate`` a band interpolated between stored bands
        when no band of this key is stored, memoised or in the band store (see
        :func:`metrics.bands.interpolate`), or for a window above every stored size one
        extended from the largest (:func:`metrics.bands.extend`); with its origin: the
        stored keys it was interpolated from, an :class:`~metrics.bands.Extended`, or None
        for a band computed or read."""
        key = (int(n_docs), int(budget))
        if not interpolate or key in self.stored_bands:
            return self.band(n_docs, budget, reference), None
        ikey = (*key, "interpolated")
        with self._lock:
            if key in self._memo:
                return self._memo[key], None
            if self._memo.get(ikey) is not None:
                self._memo.move_to_end(ikey)
                return self._memo[ikey]
        if self.band_store is not None:
            matrix = self.band_store.load(*key)
            if self._fits(matrix):  # read once, kept as a computed band would be
                return self._keep(key, matrix), None

        def made_from_stored() -> tuple[np.ndarray, list | Extended] | None:
            fitting = {k: m for k, m in self.stored_bands.items() if self._fits(m)}
            fitting.update(self._store_neighbours(key, fitting))
            # the semantic columns read the reference's sample sizes (its context draws them)
            sample_docs = subsample_docs((reference or self).config.suite)
            made = interpolate_band(fitting, key[0], key[1], self.pool.n_docs,
                                    int(self.pool.offsets[-1]), sample_docs)
            if made is None:
                made = self._extended(key, fitting, reference, sample_docs)
            if made is not None:
                made[0].setflags(write=False)
            return made

        # threads asking for one extended band (seconds of replicates) wait for the first
        made = self._once(ikey, made_from_stored)
        if made is None:
            return self.band(n_docs, budget, reference), None
        return made

    def _extended(self, key: tuple[int, int], stored: dict, reference: Profile | None,
                  sample_docs: np.ndarray) -> tuple[np.ndarray, Extended] | None:
        """A band for a window above every stored size, extended from the largest stored
        band with :data:`MOMENT_REPLICATES` replicates computed at the window's size (see
        :func:`metrics.bands.extend`); None when that does not apply."""
        plan = extension_plan(stored, key[0], key[1], sample_docs)
        ref = self if self.kind == "reference" else reference
        if plan is None or ref is None or self.config.replicates <= MOMENT_REPLICATES:
            return None
        base, compute, taken = plan
        computed = band_matrix(
            self.pool, self.pool_doc_keys, self.pool_doc_nll, key[0], key[1], ref.context(),
            MOMENT_REPLICATES, self.config.seed, pool_vectors=self.pool_vectors(ref),
            only=compute)
        matrix = extend(stored, base, computed, compute, taken)
        sources = tuple(sorted({base, *taken.values()}))
        return matrix, Extended(base, MOMENT_REPLICATES, sources)

    def _store_neighbours(self, key: tuple[int, int], have: dict) -> dict:
        """Bands in the band store next to ``key`` (the nearest document counts and
        budgets on each side, as :func:`metrics.bands.interpolate` picks them): the
        service's store holds a reference's grid of sizes, computed after the reference
        was created, and every band computed since."""
        if self.band_store is None:
            return {}
        keys = [k for k in self.band_store.stored_keys() if k not in have]
        picks = set()
        for pos in (0, 1):
            values = sorted({k[pos] for k in keys})
            below = [v for v in values if v <= key[pos]]
            above = [v for v in values if v >= key[pos]]
            for v in ([max(below)] if below else []) + ([min(above)] if above else []):
                picks.add(max(k for k in keys if k[pos] == v))
        out = {}
        for k in picks:
            matrix = self.band_store.load(*k)
            if self._fits(matrix):
                out[k] = matrix
        return out

    def _remember(self, key: tuple, value: object) -> None:
        """Memoise ``value`` under ``key``, dropping the least recently used beyond
        ``_MEMO_LIMIT``."""
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > _MEMO_LIMIT:
                self._memo.popitem(last=False)

    def band(self, n_docs: int, budget: int, reference: Profile | None = None) -> np.ndarray:
        """(replicates, metrics) band for ``n_docs`` documents and ``budget`` tokens.

        Stored bands are used when present; others are computed once and memoised on
        this object. A band for a new budget at a known window size reuses the "docs"
        columns of the earlier one (see :func:`metrics.bands.band_matrix`), so only the
        budget-dependent metrics are computed. Threads asking for the same band while it
        is being computed wait for it instead of computing it again. A baseline needs its
        reference (whose tail band and LM the metrics use).
        """
        key = (int(n_docs), int(budget))
        if key in self.stored_bands:
            return self.stored_bands[key]
        return self._once(key, lambda: self._compute_band(key, reference))

    def memoised(self, key: tuple, make: Callable[[], Any]) -> Any:
        """A value derived from this profile's bands (e.g. a band's skew allowance), made
        once per ``key`` and kept like an on-demand band (least recently used dropped)."""
        return self._once(("derived", *key), make)

    def _once(self, key: tuple, make: Callable[[], Any]) -> Any:
        """The memoised value under ``key``, or ``make()``'s, memoised; threads asking for a
        key being made wait for it instead of making it again. A failed ``make`` lets the
        next caller try."""
        while True:
            with self._lock:
                if key in self._memo:
                    self._memo.move_to_end(key)
                    return self._memo[key]
                pending = self._computing.get(key)
                if pending is None:
                    pending = self._computing[key] = threading.Event()
                    break
            pending.wait()  # another thread is making it; then read the memo
        try:
            value = make()
            self._remember(key, value)
        finally:
            with self._lock:
                del self._computing[key]
            pending.set()
        return value

    def _fits(self, matrix: np.ndarray | None) -> bool:
        return matrix is not None and matrix.shape == (self.config.replicates, len(METRIC_NAMES))

    def _doc_part(self, n_docs: int) -> np.ndarray | None:
        """The "docs" columns of any band at ``n_docs`` documents drawn the current way."""
        with self._lock:
            part = self._doc_parts.get(n_docs)
        if part is not None:
            return part
        if self.band_draw == BAND_DRAW:
            for (n, _), matrix in self.stored_bands.items():
                if n == n_docs and self._fits(matrix):
                    return matrix[:, DOC_COLUMNS]
        if self.band_store is not None:
            matrix = self.band_store.load_any(n_docs)
            if self._fits(matrix):
                return matrix[:, DOC_COLUMNS]
        return None

    def _compute_band(self, key: tuple[int, int], reference: Profile | None) -> np.ndarray:
        ref = self if self.kind == "reference" else reference
        if ref is None:
            raise ProfileError("a baseline band needs the reference it was built against")
        store = self.band_store
        matrix = store.load(*key) if store is not None else None
        if not self._fits(matrix):
            matrix = band_matrix(
                self.pool, self.pool_doc_keys, self.pool_doc_nll, key[0], key[1],
                ref.context(), self.config.replicates, self.config.seed,
                doc_part=self._doc_part(key[0]), pool_vectors=self.pool_vectors(ref),
            )
            if store is not None:
                store.save(key[0], key[1], matrix)
        return self._adopt(key, matrix)

    def _adopt(self, key: tuple[int, int], matrix: np.ndarray) -> np.ndarray:
        """A band made read-only, its "docs" columns reusable at other budgets."""
        matrix.setflags(write=False)
        with self._lock:
            self._doc_parts.setdefault(key[0], matrix[:, DOC_COLUMNS])
        return matrix

    def _keep(self, key: tuple[int, int], matrix: np.ndarray) -> np.ndarray:
        """A band read from the store, memoised as :meth:`band` keeps a computed one."""
        self._remember(key, self._adopt(key, matrix))
        return matrix

    def __repr__(self) -> str:
        return (
            f"Profile(kind={self.kind!r}, name={self.name!r}, sha256={self.sha256[:12]}…, "
            f"documents={self.document_count}, tokens={self.token_count})"
        )

    # ------------------------------------------------------------------ serialisation

    def _meta(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "sha256": self.sha256,
            "document_count": self.document_count,
            "token_count": self.token_count,
            "config": self.config.to_dict(),
            "reference_sha256": self.reference_sha256,
            "human_ratios": self.human_ratios,
            "metrics": list(METRIC_SUITE),
            "band_draw": self.band_draw,
            "vocab_size": len(self.pool.vocab),
            "semantic": None if self.semantic is None else self.semantic.to_arrays()[1],
        }

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        meta = json.dumps(self._meta(), sort_keys=True).encode("utf-8")
        arrays["meta"] = np.frombuffer(meta, dtype=np.uint8)
        words = [w.encode("utf-8") for w in self.pool.vocab]
        arrays["vocab_blob"] = np.frombuffer(b"".join(words), dtype=np.uint8)
        arrays["vocab_off"] = np.cumsum([0] + [len(w) for w in words]).astype(np.int64)
        arrays["vocab_ids"] = self.pool.vocab_ids
        arrays["pool_index"] = self.pool.index
        arrays["pool_offsets"] = self.pool.offsets
        arrays["pool_doc_keys"] = self.pool_doc_keys
        arrays["pool_doc_nll"] = self.pool_doc_nll
        if self.model is not None:
            for name in ReferenceModel.ARRAYS:
                arrays["m_" + name] = getattr(self.model, name)
        keys = sorted(self.stored_bands)
        arrays["band_keys"] = np.asarray(keys, dtype=np.int64).reshape(-1, 2)
        if keys:
            arrays["band_values"] = np.stack([self.stored_bands[k] for k in keys])
        if self.semantic is not None:
            arrays.update(self.semantic.to_arrays()[0])
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        payload = buf.getvalue()
        return (
            MAGIC
            + FORMAT_VERSION.to_bytes(4, "little")
            + hashlib.sha256(payload).digest()
            + payload
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Profile:
        """Load a profile; raises :class:`ProfileError` if corrupt or incompatible."""
        head = len(MAGIC) + 4 + 32
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) < head:
            raise ProfileError("not a collapsewatch profile file (too short)")
        data = bytes(data)
        if not data.startswith(MAGIC):
            raise ProfileError("not a collapsewatch profile file (bad magic header)")
        version = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "little")
        if version != FORMAT_VERSION:
            raise ProfileError(
                f"profile format version {version} is not supported (this collapsewatch reads "
                f"version {FORMAT_VERSION}); rebuild the profile with this version"
            )
        digest, payload = data[len(MAGIC) + 4 : head], data[head:]
        if hashlib.sha256(payload).digest() != digest:
            raise ProfileError("profile file is corrupted (checksum mismatch); rebuild or re-copy it")
        try:
            return cls._from_payload(payload)
        except ProfileError:
            raise
        except Exception as exc:  # a payload that passed the checksum but is malformed
            raise ProfileError(f"profile file is malformed: {exc}") from exc

    @classmethod
    def _from_payload(cls, payload: bytes) -> Profile:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        if meta.get("kind") not in KINDS:
            raise ProfileError(f"unknown profile kind {meta.get('kind')!r}")
        blob = arrays["vocab_blob"].tobytes()
        off = arrays["vocab_off"]
        vocab = tuple(blob[off[i] : off[i + 1]].decode("utf-8") for i in range(len(off) - 1))
        pool = Corpus(vocab, arrays["vocab_ids"], arrays["pool_index"], arrays["pool_offsets"])
        model = None
        if meta["kind"] == "reference":
            model = ReferenceModel(**{n: arrays["m_" + n] for n in ReferenceModel.ARRAYS})
        bands: dict[tuple[int, int], np.ndarray] = {}
        stale: tuple[int, ...] = ()
        # bands computed with another metric list (or an older definition of one of its
        # metrics) are dropped and recomputed on demand
        if len(arrays["band_keys"]):
            if meta.get("metrics") == list(METRIC_SUITE):
                for (n, b), values in zip(arrays["band_keys"], arrays["band_values"]):
                    bands[(int(n), int(b))] = values
            else:
                stale = tuple(sorted({int(n) for n, _ in arrays["band_keys"]}))
        for value in list(arrays.values()) + list(bands.values()):
            value.setflags(write=False)
        return cls(
            kind=meta["kind"],
            name=meta["name"],
            sha256=meta["sha256"],
            document_count=int(meta["document_count"]),
            token_count=int(meta["token_count"]),
            config=ReferenceConfig.from_dict(meta["config"]),
            pool=pool,
            pool_doc_keys=arrays["pool_doc_keys"],
            pool_doc_nll=arrays["pool_doc_nll"],
            model=model,
            reference_sha256=meta.get("reference_sha256"),
            human_ratios=meta.get("human_ratios"),
            stored_bands=bands,
            band_draw=int(meta.get("band_draw", 1)),
            stale_band_sizes=stale,
            # absent from profiles built before embeddings (or without a model)
            semantic=(SemanticProfile.from_arrays(arrays, meta["semantic"])
                      if meta.get("semantic") else None),
        )


def save_profile(profile: Profile, path: str | PathLike) -> None:
    """Write a profile file atomically (temporary file, then rename)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(profile.to_bytes())
    tmp.replace(target)


def load_profile(path: str | PathLike) -> Profile:
    """Read a profile file; raises ProfileError if corrupt/incompatible, OSError if unreadable."""
    return Profile.from_bytes(Path(path).read_bytes())
