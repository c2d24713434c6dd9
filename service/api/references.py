"""Routes: human references (create from JSON or a file upload, list, get, delete when
unused; immutable)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from service.api.deps import AdminPrincipal, ReadPrincipal, SessionDep, SettingsDep
from service.api.errors import ProblemError, not_utf8_detail
from service.domain import documents as doc_files
from service.domain import references as service
from service.domain import retention
from service.domain.schemas import (
    Description,
    ReferenceCreate,
    ReferenceList,
    ReferenceName,
    ReferencePublic,
)
from service.settings import Settings

router = APIRouter(tags=["references"])

_NAME = TypeAdapter(ReferenceName)
_DESCRIPTION = TypeAdapter(Description | None)
_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": ".jsonl (one JSON object per line), .txt (one document per "
                                "line) or .csv, optionally gzipped (.jsonl.gz, ...)"},
        "name": {"type": "string", "description": "default: the file name without extension"},
        "field": {"type": "string", "default": "text",
                  "description": "the JSON field or CSV column holding the text"},
        "format": {"type": "string", "enum": list(doc_files.FORMATS),
                   "description": "default: from the file name's extension"},
        "description": {"type": "string"},
    },
}
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ReferenceCreate.model_json_schema()},
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
        },
    }
}


def _invalid(exc: ValidationError, prefix: tuple = ()) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *prefix, *e["loc"])}
                                   for e in exc.errors()])


async def _from_json(request: Request) -> tuple[str, list[str], str | None]:
    body = await request.body()
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProblemError(400, not_utf8_detail(exc)) from None
    try:
        parsed = ReferenceCreate.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    return parsed.name, parsed.documents, parsed.description


async def _from_upload(request: Request,
                       settings: Settings) -> tuple[str, list[str], str | None]:
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ProblemError(422, "file: attach the documents as the multipart field 'file'")
    filename = upload.filename or ""
    raw_name = form.get("name") or PurePath(filename).name.split(".")[0]
    try:
        name = _NAME.validate_python(raw_name)
    except ValidationError as exc:
        raise _invalid(exc, ("name",)) from None
    data = await upload.read()
    try:
        data, inner_name = doc_files.decompress_upload(
            data, filename, doc_files.GZIP_EXPANSION_LIMIT * settings.max_body_bytes)
        fmt = doc_files.format_for(inner_name, _text(form.get("format")))
        documents = await run_in_threadpool(doc_files.parse_documents, data, fmt,
                                            _text(form.get("field")) or "text",
                                            settings.max_reference_document_chars)
    except doc_files.DocumentParseError as exc:
        raise ProblemError(422, f"file {filename!r}: {exc}") from None
    try:
        description = _DESCRIPTION.validate_python(_text(form.get("description")))
    except ValidationError as exc:
        raise _invalid(exc, ("description",)) from None
    return name, documents, description


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


@router.post("/references", status_code=201, response_model=ReferencePublic,
             summary="Create a reference (a new version when the name exists)",
             openapi_extra=_CREATE_BODY)
async def create_reference(request: Request, principal: AdminPrincipal, session: SessionDep,
                           settings: SettingsDep, background: BackgroundTasks
                           ) -> ReferencePublic:
    if principal.model_name is not None:
        raise ProblemError(403, f"key is scoped to model '{principal.model_name}'; references "
                                "are shared by all models, so use an admin key without --model")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        name, documents, description = await _from_json(request)
    elif content_type == "multipart/form-data":
        name, documents, description = await _from_upload(request, settings)
    else:
        raise ProblemError(415, "send application/json {\"name\", \"documents\"} or "
                                "multipart/form-data with a 'file' field")
    row = await run_in_threadpool(service.create_reference, session, settings, name,
                                  documents, description)
    if settings.reference_band_grid:
        # a worker computes the band grid (windows between two sizes then interpolate)
        from service.dispatch import enqueue_reference_bands

        background.add_task(enqueue_reference_bands, row.id)
    return ReferencePublic.model_validate(row, from_attributes=True)


@router.get("/references", response_model=ReferenceList,
            summary="References by name and version (paged)")
def list_references(_: ReadPrincipal, session: SessionDep,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    cursor: Annotated[str | None, Query(max_length=512)] = None
                    ) -> ReferenceList:
    rows, next_cursor = service.page_references(session, limit, cursor)
    return ReferenceList(references=[ReferencePublic.model_validate(r, from_attributes=True)
                                     for r in rows], next_cursor=next_cursor)


@router.get("/references/{reference_id}", response_model=ReferencePublic)
def get_reference(reference_id: Annotated[int, Path(ge=1, le=2**31 - 1)], _: ReadPrincipal,
                  session: SessionDep) -> ReferencePublic:
    return ReferencePublic.model_validate(service.get_reference(session, reference_id),
                                          from_attributes=True)


@router.delete("/references/{reference_id}", status_code=204, response_class=Response,
               summary="Delete a reference no model, baseline or stored evaluation uses (409)")
def delete_reference(reference_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
                     principal: AdminPrincipal, session: SessionDep) -> Response:
    if principal.model_name is not None:
        raise ProblemError(403, f"key is scoped to model '{principal.model_name}'; references "
                                "are shared by all models, so use an admin key without --model")
    retention.delete_reference(session, reference_id)
    return Response(status_code=204)
