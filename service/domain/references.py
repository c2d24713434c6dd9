"""Human references: parse uploads, build the frozen profile, store immutable versions."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Sequence

from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from service.domain.errors import Conflict, Invalid, NotFound
from service.domain.paging import decode_cursor, page
from service.domain.profiles import configured_embedder
from service.domain.schemas import MAX_JSON_DEPTH, UNSTORABLE_TEXT, json_depth_exceeds
from service.domain.tables import Reference
from service.logging import get_logger
from service.settings import Settings, get_settings

log = get_logger("collapsewatch.references")

FORMATS = ("jsonl", "txt", "csv")
_VERSION_RETRIES = 5


class DocumentParseError(ValueError):
    """An uploaded file cannot be read as documents; the message says where and why."""


def format_for(filename: str, explicit: str | None = None) -> str:
    """The input format from an explicit choice or the file name's extension."""
    if explicit:
        fmt = explicit.lower().lstrip(".")
        if fmt not in FORMATS:
            raise DocumentParseError(f"unknown format {explicit!r}; use one of {', '.join(FORMATS)}")
        return fmt
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix == "json":
        suffix = "jsonl"
    if suffix not in FORMATS:
        raise DocumentParseError(
            f"cannot tell the format of {filename!r}: name it .jsonl (one JSON object per "
            "line), .txt (one document per line) or .csv, or pass the form field 'format'"
        )
    return suffix


# a gzipped upload may expand to this many times the request body limit
GZIP_EXPANSION_LIMIT = 10


def decompress_upload(data: bytes, filename: str, max_bytes: int) -> tuple[bytes, str]:
    """A ``.gz`` upload decompressed (at most ``max_bytes``) and the name inside it
    (``human.jsonl.gz`` -> ``human.jsonl``); other files unchanged."""
    if not filename.lower().endswith(".gz"):
        return data, filename
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise DocumentParseError(f"the file is not valid gzip ({exc})") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise DocumentParseError(f"the file decompresses to more than {max_bytes} bytes; "
                                 "split it or send it uncompressed in several references")
    return out, filename[:-3]


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DocumentParseError(
            f"the file is not valid UTF-8 (line {line}, byte {exc.start}); save it as UTF-8"
        ) from None


def _length_problem(doc: str, max_chars: int) -> str | None:
    if len(doc) <= max_chars:
        return None
    return (f"a document of {len(doc)} characters; the limit is {max_chars} "
            "(COLLAPSEWATCH_MAX_REFERENCE_DOCUMENT_CHARS)")


def _check_storable(doc: str, where: str, max_chars: int) -> str:
    match = UNSTORABLE_TEXT.search(doc)
    if match is not None:
        raise DocumentParseError(f"{where} contains a NUL character or an unpaired surrogate")
    problem = _length_problem(doc, max_chars)
    if problem is not None:
        raise DocumentParseError(f"{where}: {problem}")
    return doc


def parse_documents(data: bytes, fmt: str, field: str = "text",
                    max_chars: int | None = None) -> list[str]:
    """Documents from a .jsonl (``field`` of each object), .txt (one per line) or .csv
    (column ``field``) file. Blank lines are skipped. A document longer than ``max_chars``
    (default: ``COLLAPSEWATCH_MAX_REFERENCE_DOCUMENT_CHARS``) is an error naming its line."""
    limit = get_settings().max_reference_document_chars if max_chars is None else max_chars
    text = _decode(data)
    docs: list[str] = []
    if fmt == "txt":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                docs.append(_check_storable(line, f"line {number}", limit))
        return docs
    if fmt == "jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if json_depth_exceeds(line, MAX_JSON_DEPTH):
                # json.loads recurses: thousands of "[" are a RecursionError, not a message
                raise DocumentParseError(f"line {number}: JSON nested more than "
                                         f"{MAX_JSON_DEPTH} levels deep")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DocumentParseError(f"line {number} is not valid JSON: {exc.msg}") from None
            if not isinstance(row, dict) or field not in row:
                raise DocumentParseError(
                    f"line {number} has no field {field!r}; pass the form field 'field' "
                    "to read another one"
                )
            value = row[field]
            if not isinstance(value, str):
                raise DocumentParseError(f"line {number}: field {field!r} is not a string")
            docs.append(_check_storable(value, f"line {number}", limit))
        return docs
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None or field not in reader.fieldnames:
            columns = ", ".join(reader.fieldnames or []) or "none"
            raise DocumentParseError(
                f"the CSV has no column {field!r} (columns: {columns}); pass the form field "
                "'field' to choose one"
            )
        try:
            for number, row in enumerate(reader, 2):
                value = row.get(field) or ""
                if value.strip():
                    docs.append(_check_storable(value, f"row {number}", limit))
        except csv.Error as exc:
            raise DocumentParseError(f"the CSV is malformed near line {reader.line_num}: {exc}") from None
        return docs
    raise DocumentParseError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


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
        problem = _length_problem(doc, settings.max_reference_document_chars)
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

