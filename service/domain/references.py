"""Human references: parse uploads, build the frozen profile, store immutable versions."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence

from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from service.domain.documents import length_problem
from service.domain.errors import Conflict, Invalid, NotFound
from service.domain.paging import decode_cursor, page
from service.domain.profiles import configured_embedder
from service.domain.tables import Reference
from service.logging import get_logger
from service.settings import Settings

log = get_logger("collapsewatch.references")

_VERSION_RETRIES = 5


def documents_for_profile(documents: Sequence[str]) -> list[str]:
    """Documents as stored next to the profile: the library's normalisation (NFC, one kind
    of newline, surrounding whitespace stripped), blank documents dropped."""
    from metrics.text import normalize_document

    normalised = (normalize_document(doc) for doc in documents)
    return [doc for doc in normalised if doc]


def _build_profile(documents: list[str], name: str, settings: Settings):
    import metrics

    if len(documents) < settings.min_reference_documents:
        raise Invalid(
            f"reference {name!r} has {len(documents)} non-blank documents; at least "
            f"{settings.min_reference_documents} are needed to build a human band "
            "(COLLAPSEWATCH_MIN_REFERENCE_DOCUMENTS)",
            needed=settings.min_reference_documents, got=len(documents),
        )
    if len(documents) > settings.max_reference_documents:
        raise Invalid(
            f"reference {name!r} has {len(documents)} documents; the limit is "
            f"{settings.max_reference_documents} (COLLAPSEWATCH_MAX_REFERENCE_DOCUMENTS); "
            "sample it down",
        )
    try:
        # the library's own floor (and its word count check) still applies when the
        # deployment's minimum is lower: settings can only raise the bar
        # embedded with the configured model (none installed: a lexical-only reference)
        return metrics.build_reference(documents, name, embedder=configured_embedder()[0])
    except metrics.ReferenceTooSmall as exc:
        raise Invalid(str(exc)) from None
    except metrics.MetricsError as exc:
        raise Invalid(f"cannot build reference {name!r}: {exc}") from None


def create_reference(
    session: Session, settings: Settings, name: str, documents: Sequence[str],
    description: str | None = None,
) -> Reference:
    """Build the profile and store it as the next version of ``name``. Immutable."""
    for index, doc in enumerate(documents):
        problem = length_problem(doc, settings.max_reference_document_chars)
        if problem is not None:
            where = f"documents.{index}"
            raise Invalid(f"{where}: {problem}", errors=[{"field": where, "message": problem}])
    docs = documents_for_profile(documents)
    profile = _build_profile(docs, name, settings)
    documents_gz = gzip.compress(json.dumps(docs, ensure_ascii=False).encode("utf-8"), 6)
    blob = profile.to_bytes()
    for _ in range(_VERSION_RETRIES):
        latest = session.scalar(select(func.max(Reference.version)).where(Reference.name == name))
        row = Reference(
            name=name, version=(latest or 0) + 1, sha256=profile.sha256,
            document_count=profile.document_count, token_count=profile.token_count,
            documents_gz=documents_gz, profile=blob, description=description,
        )
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            # another request took this version number first: take the next one
            session.rollback()
            continue
        log.info("reference created", extra={"reference": name, "version": row.version,
                                              "sha256": row.sha256,
                                              "documents": row.document_count})
        return row
    raise Conflict(f"could not assign a version to reference {name!r}; retry")


# listings and lookups do not need the (large) stored documents and profile
_SKIP_BLOBS = (defer(Reference.documents_gz), defer(Reference.profile))


def list_references(session: Session) -> list[Reference]:
    stmt = select(Reference).options(*_SKIP_BLOBS).order_by(Reference.name, Reference.version)
    return list(session.scalars(stmt))


def page_references(session: Session, limit: int,
                    cursor: str | None = None) -> tuple[list[Reference], str | None]:
    """One page of references by (name, version)."""
    after = decode_cursor(cursor, (str, int))
    stmt = select(Reference).options(*_SKIP_BLOBS)
    if after is not None:
        stmt = stmt.where(tuple_(Reference.name, Reference.version) > after)
    rows = list(session.scalars(stmt.order_by(Reference.name, Reference.version)
                                .limit(limit + 1)))
    return page(rows, limit, lambda r: (r.name, r.version))


def get_reference(session: Session, reference_id: int) -> Reference:
    row = session.get(Reference, reference_id, options=_SKIP_BLOBS)
    if row is None:
        raise NotFound(f"reference {reference_id} does not exist; "
                                "list them with GET /api/v1/references")
    return row

