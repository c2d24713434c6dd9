"""Frozen profiles (references and baselines) as scoring reads them: deserialised once per
sha256 per process, with their computed bands kept in the database's band cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.domain.band_cache import DatabaseBandStore, profile_key
from service.domain.db import session_factory
from service.domain.tables import Baseline, Reference
from service.logging import get_logger
from service.settings import get_settings

log = get_logger("collapsewatch.profiles")


class ProfileCache:
    """A small thread-safe LRU of deserialised profiles, keyed by sha256."""

    def __init__(self, max_entries: int = 32) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a profile was deserialised (observability, tests)

    def get(self, sha256: str, load_bytes: Callable[[], bytes],
            band_context: str | None = None) -> Any:
        """The profile cached under ``sha256``, loaded with ``load_bytes`` on a miss.

        With ``band_context`` (what, besides its bytes, the profile's bands depend on),
        the profile keeps its computed bands in the database (service.domain.band_cache).
        """
        with self._lock:
            if sha256 in self._items:
                self._items.move_to_end(sha256)
                return self._items[sha256]
        import metrics

        data = load_bytes()
        profile = metrics.Profile.from_bytes(data)
        if profile.stale_band_sizes:
            log.warning("stale stored bands ignored", extra={
                "kind": profile.kind, "sha256": sha256,
                "band_sizes": list(profile.stale_band_sizes),
                "reason": "computed by an older metric suite; bands are computed on first "
                          "use and kept in the band cache"})
        if profile.kind == "reference":
            profile.use_embedder(*configured_embedder())
        if band_context is not None:
            profile.band_store = DatabaseBandStore(profile_key(data, band_context))
        with self._lock:
            self.loads += 1
            self._items[sha256] = profile
            self._items.move_to_end(sha256)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return profile

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


PROFILES = ProfileCache()


def configured_embedder() -> tuple[Any, str | None]:
    """(embedder, None) or (None, why): the model of COLLAPSEWATCH_EMBEDDING_MODEL and
    COLLAPSEWATCH_EMBEDDING_TOKENIZER, or the pinned default without them; loaded once per
    process. Without one, the semantic metrics say "unavailable (why)" and scoring stays
    lexical."""
    from metrics.embedding import shared_embedder

    settings = get_settings()
    return shared_embedder(settings.embedding_model, settings.embedding_tokenizer)


def reference_profile(session: Session, reference_id: int) -> Any:
    sha = session.scalar(select(Reference.sha256).where(Reference.id == reference_id))
    if sha is None:
        raise LookupError(f"reference {reference_id} does not exist")
    return PROFILES.get(
        f"reference:{sha}",
        lambda: session.scalar(select(Reference.profile).where(Reference.id == reference_id)),
        band_context="reference",
    )


def baseline_profile(session: Session, baseline_id: int) -> Any:
    row = session.execute(select(Baseline.sha256, Baseline.reference_id)
                          .where(Baseline.id == baseline_id)).one_or_none()
    if row is None:
        raise LookupError(f"baseline {baseline_id} does not exist")
    # a baseline's profile depends on the reference it was built against as well as on
    # its documents, so the key carries the row id too; its bands are computed with that
    # reference's language model and tail band
    return PROFILES.get(
        f"baseline:{baseline_id}:{row.sha256}",
        lambda: session.scalar(select(Baseline.profile).where(Baseline.id == baseline_id)),
        band_context=f"baseline of reference {row.reference_id}",
    )


def compute_reference_grid(reference_id: int, sizes: tuple[int, ...]) -> list[tuple[int, int]]:
    """Compute a reference's human bands at window ``sizes`` into the store (those already
    stored are read, not recomputed), so windows between two sizes get interpolated bands
    (:meth:`metrics.Profile.band_with_origin`). Returns the (documents, budget) keys.
    Raises LookupError for an unknown reference."""
    profile, keys = _reference_grid(reference_id, sizes)
    for n_docs, budget in keys:
        profile.band(n_docs, budget)
    return keys


def missing_reference_grid(reference_id: int, sizes: tuple[int, ...]) -> list[tuple[int, int]]:
    """The (documents, budget) keys of a reference's band grid at ``sizes`` that neither its
    file nor the database band cache holds: a reference created before the grid was
    computed at ``POST /references`` (or while no worker ran) has them all missing. Raises
    LookupError for an unknown reference."""
    profile, keys = _reference_grid(reference_id, sizes)
    have = set(profile.stored_bands)
    if profile.band_store is not None:
        have.update(profile.band_store.stored_keys())
    return [key for key in keys if key not in have]


def _reference_grid(reference_id: int, sizes: tuple[int, ...]
                    ) -> tuple[Any, list[tuple[int, int]]]:
    """A reference's profile and the (documents, budget) keys of its grid at ``sizes``."""
    from metrics.reference import band_grid

    with session_factory()() as session:
        profile = reference_profile(session, reference_id)
    return profile, band_grid(profile.pool, sizes)


class MixtureCache:
    """Built mixture models of streams (``metrics.mixture.MixtureModel``), keyed by the
    reference's and the sources' sha256: a stream's windows share one build (one bigram LM
    per source and the calibration scores), which is redone only when a source or the
    reference changes. Builds are serialised: they are rare, and two threads building the
    same model at once would only waste a core."""

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self.builds = 0  # how many mixtures were built (observability, tests)

    def get(self, key: tuple, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        with self._build_lock:
            with self._lock:
                if key in self._items:  # built by another thread meanwhile
                    return self._items[key]
            mixture = build()
            with self._lock:
                self.builds += 1
                self._items[key] = mixture
                while len(self._items) > self.max_entries:
                    self._items.popitem(last=False)
        return mixture

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


MIXTURES = MixtureCache()


def source_names(rows: list[tuple[int, str]]) -> dict[int, str]:
    """How each source baseline is named in ``synthetic_share.by_source`` and in the
    Prometheus ``source`` label: its name, or ``name#id`` when two sources share a name."""
    counts: dict[str, int] = {}
    for _, name in rows:
        counts[name] = counts.get(name, 0) + 1
    return {bid: name if counts[name] == 1 else f"{name}#{bid}" for bid, name in rows}


def stream_mixture(session: Session, reference_id: int, source_ids: list[int]) -> Any:
    """The mixture model of a stream's window: the reference's profile against the baselines
    ``source_ids``, built once per (reference sha256, source sha256s) per process.

    LookupError when the reference or a source no longer exists; ``metrics.ProfileError``
    when a source was built against another reference.

    ``STREAM_SHARE_SCORES`` says how (``metrics.mixture.stream_mixture``): by default both
    the LM ratio over every document and, when the reference and every source carry
    embeddings of the model this worker embeds with, the LM ratio with the embedding score
    over the documents the window's semantic metrics embed (no embedding of its own), the
    two joined (docs/synthetic-share.md); without embeddings, the LM ratio alone.
    ``synthetic_share.scores`` says which."""
    from dataclasses import replace

    from metrics.mixture import stream_mixture as metrics_stream_mixture

    ref_sha = session.scalar(select(Reference.sha256).where(Reference.id == reference_id))
    if ref_sha is None:
        raise LookupError(f"reference {reference_id} does not exist")
    rows = {r.id: r for r in session.execute(
        select(Baseline.id, Baseline.name, Baseline.sha256).where(Baseline.id.in_(source_ids)))}
    missing = [bid for bid in source_ids if bid not in rows]
    if missing:
        raise LookupError(f"source baseline {missing[0]} does not exist")
    names = source_names([(bid, rows[bid].name) for bid in source_ids])
    key = (ref_sha, tuple((bid, rows[bid].sha256, names[bid]) for bid in source_ids))

    def build() -> Any:
        reference = reference_profile(session, reference_id)
        # the by_source keys are the stored baselines' names, not the names inside their
        # profile files (a shallow copy: the cached profile itself is shared)
        sources = [replace(baseline_profile(session, bid), name=names[bid]) for bid in source_ids]
        settings = get_settings()
        scores = "semantic" if settings.stream_semantic_share else settings.stream_share_scores
        model, lexical_only = metrics_stream_mixture(reference, sources, scores=scores)
        if lexical_only:
            log.info("stream mixture without the embedding score",
                     extra={"reference_id": reference_id, "sources": source_ids,
                            "scores": scores, "reason": lexical_only})
        return model

    return MIXTURES.get(key, build)
