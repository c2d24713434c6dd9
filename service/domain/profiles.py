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
from service.domain.tables import Baseline, Reference
from service.settings import get_settings


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
