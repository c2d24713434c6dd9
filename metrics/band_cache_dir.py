"""A directory of computed bands: :class:`metrics.profile.BandStore` on local files.

The offline CLI (``collapsewatch score``) keeps the bands it computes here, so a window size
seen once costs a file read the next time instead of a bootstrap. Layout:
``<root>/<key>/<n_docs>-<budget>.npy`` (float64, no pickles). ``key`` names the profile and
the code that computed the band; the CLI uses the server's key
(``service.domain.band_cache.profile_key``), so a key never names a stale band. Files are
written to a temporary name and renamed, so concurrent runs never read half a band. Any
failure is a miss: bands can always be computed.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from metrics.atomic import write_atomic

_NAME = re.compile(r"^(\d+)-(\d+)\.npy$")


def band_key(profile_bytes: bytes, context: str = "", version: str = "") -> str:
    """The key of a profile's computed bands: the code (``version``, the replicate draw,
    the metric list with each definition's revision), the ``context`` (a baseline's
    reference) and the profile's bytes. The server's database band cache and the CLI's
    directory both use it (the server through ``service.domain.band_cache.profile_key``),
    so a key never names a stale band. Here, not in the service, so the CLI computes it
    without importing the database layer."""
    from metrics.bands import BAND_DRAW
    from metrics.registry import METRIC_SUITE

    h = hashlib.sha256()
    for part in (f"collapsewatch {version} draw {BAND_DRAW}", ",".join(METRIC_SUITE), context):
        h.update(part.encode("utf-8") + b"\0")
    h.update(profile_bytes)
    return h.hexdigest()


class DirectoryBandStore:
    """Bands of one profile under ``root / key``."""

    def __init__(self, root: str | os.PathLike, key: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{16,128}", key):
            raise ValueError(f"band cache key must be hex, got {key!r}")
        self.dir = Path(root) / key

    def _path(self, n_docs: int, budget: int) -> Path:
        return self.dir / f"{int(n_docs)}-{int(budget)}.npy"

    @staticmethod
    def _read(path: Path) -> np.ndarray | None:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def load(self, n_docs: int, budget: int) -> np.ndarray | None:
        return self._read(self._path(n_docs, budget))

    def load_any(self, n_docs: int) -> np.ndarray | None:
        try:
            names = sorted(p.name for p in self.dir.iterdir())
        except OSError:
            return None
        for name in names:
            m = _NAME.match(name)
            if m and int(m.group(1)) == int(n_docs):
                matrix = self._read(self.dir / name)
                if matrix is not None:
                    return matrix
        return None

    def stored_keys(self) -> list[tuple[int, int]]:
        try:
            names = [p.name for p in self.dir.iterdir()]
        except OSError:
            return []
        return sorted((int(m.group(1)), int(m.group(2)))
                      for m in map(_NAME.match, names) if m)

    def save(self, n_docs: int, budget: int, matrix: np.ndarray) -> None:
        # a read-only or full disk costs a recomputation next time, nothing else
        data = np.ascontiguousarray(matrix, dtype=np.float64)
        write_atomic(self._path(n_docs, budget),
                     lambda fh: np.save(fh, data, allow_pickle=False))
