"""Reading documents from files: .jsonl, .txt, .csv (and .gz uploads).

One reader for the REST uploads (references, baselines) and the offline CLI, so a file reads
the same everywhere. No database here: the CLI imports it without the server's storage.
"""

from __future__ import annotations

import csv
import io
import json
import zlib

from service.domain.schemas import MAX_JSON_DEPTH, UNSTORABLE_TEXT, json_depth_exceeds

UPLOAD_FIELD_HINT = "pass the form field 'field' to read another one"

FORMATS = ("jsonl", "txt", "csv")


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


def length_problem(doc: str, max_chars: int | None) -> str | None:
    if max_chars is None or len(doc) <= max_chars:
        return None
    return (f"a document of {len(doc)} characters; the limit is {max_chars} "
            "(COLLAPSEWATCH_MAX_REFERENCE_DOCUMENT_CHARS)")


def _check_storable(doc: str, where: str, max_chars: int | None, storable: bool) -> str:
    if storable and UNSTORABLE_TEXT.search(doc) is not None:
        raise DocumentParseError(f"{where} contains a NUL character or an unpaired surrogate")
    problem = length_problem(doc, max_chars)
    if problem is not None:
        raise DocumentParseError(f"{where}: {problem}")
    return doc


def parse_documents(data: bytes, fmt: str, field: str = "text", max_chars: int | None = None,
                    *, storable: bool = True, field_hint: str = UPLOAD_FIELD_HINT) -> list[str]:
    """Documents from a .jsonl (``field`` of each object), .txt (one per line) or .csv
    (column ``field``) file. Blank .txt lines and blank .csv cells are skipped; every
    non-blank .jsonl line is one document. A document longer than ``max_chars`` is an error
    naming its line. ``storable`` refuses NUL characters and unpaired surrogates (the
    database cannot keep them; scoring offline can). ``field_hint`` tells the caller how to
    pick another field: the upload form's 'field' or the CLI's --field."""
    limit = max_chars

    def keep(doc: str, where: str) -> str:
        return _check_storable(doc, where, limit, storable)

    text = _decode(data)
    docs: list[str] = []
    if fmt == "txt":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                docs.append(keep(line, f"line {number}"))
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
                raise DocumentParseError(f"line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or field not in row:
                raise DocumentParseError(
                    f"line {number} has no field {field!r}; {field_hint}"
                )
            value = row[field]
            if not isinstance(value, str):
                raise DocumentParseError(f"line {number}: field {field!r} is not a string")
            docs.append(keep(value, f"line {number}"))
        return docs
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None or field not in reader.fieldnames:
            columns = ", ".join(reader.fieldnames or []) or "none"
            raise DocumentParseError(
                f"the CSV has no column {field!r} (columns: {columns}); {field_hint}"
            )
        try:
            for number, row in enumerate(reader, 2):
                value = row.get(field) or ""
                if value.strip():
                    docs.append(keep(value, f"row {number}"))
        except csv.Error as exc:
            raise DocumentParseError(f"the CSV is malformed near line {reader.line_num}: {exc}") from None
        return docs
    raise DocumentParseError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
