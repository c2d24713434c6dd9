"""Count the band computations of metrics.Profile (which bands, and whether the "docs"
columns came from an earlier band)."""

from __future__ import annotations

import metrics.profile as profile_module


def count_band_computations(monkeypatch) -> list[tuple[int, int, bool]]:
    """Wrap the real ``band_matrix`` that profiles call; the list fills with
    ``(n_docs, budget, reused_doc_columns)``, one entry per computation."""
    calls: list[tuple[int, int, bool]] = []
    real = profile_module.band_matrix

    def counted(*args, **kwargs):
        calls.append((args[3], args[4], kwargs.get("doc_part") is not None))
        return real(*args, **kwargs)

    monkeypatch.setattr(profile_module, "band_matrix", counted)
    return calls
