"""Routes: a model's baseline (its own known-good outputs), set and read.

``POST /models/{name}/baseline`` accepts
* ``application/json``: ``{"documents": [...]}``, a bare JSON list of documents, or
  ``{"from": ts, "to": ts}`` over the model's stored samples; optional ``name``,
  ``reason`` and ``replace``;
* ``multipart/form-data``: ``file`` (.jsonl/.txt/.csv documents) or ``profile`` (a baseline
  profile file from ``collapsewatch baseline build``), with the same optional fields.
A model that already has a baseline keeps it unless ``replace`` is true (re-pinning is
explicit, and recorded with who, when and the old and new sha256). A baseline whose own
profile reads collapse against human is refused (422) unless ``accept_collapsed`` is true.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.api.deps import (
    AdminPrincipal,
    ReadPrincipal,
    SessionDep,
    SettingsDep,
    check_model_access,
)
from service.api.errors import ProblemError
from service.domain import baselines as service
from service.domain.baseline_schemas import BaselineCreate, BaselineRequest
from service.domain.catalog import get_model
from service.domain.documents import DocumentParseError, format_for, parse_documents
from service.settings import get_settings

router = APIRouter(tags=["baselines"])

_MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "model outputs: .jsonl, .txt (one per line) or .csv"},
        "profile": {"type": "string", "format": "binary",
                    "description": "a baseline profile built with `collapsewatch baseline build`"},
        "name": {"type": "string"}, "reason": {"type": "string"},
        "replace": {"type": "boolean", "default": False},
        "accept_collapsed": {"type": "boolean", "default": False},
        "field": {"type": "string", "default": "text"},
        "format": {"type": "string", "enum": ["jsonl", "txt", "csv"]},
    },
}
_CREATE_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": BaselineCreate.model_json_schema(by_alias=True)},
    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
}}}


def _invalid(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])


async def _from_json(request: Request) -> BaselineRequest:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProblemError(422, f"body is not valid JSON: {exc}") from None
    if isinstance(data, list):
        data = {"documents": data}
    try:
        body = BaselineCreate.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None
    return BaselineRequest.from_body(body)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _flag(value: Any, field: str) -> bool:
    text = (_text(value) or "false").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ProblemError(422, f"{field}: expected true or false, got {value!r}")


async def _from_upload(request: Request) -> BaselineRequest:
    form = await request.form()
    upload, profile = form.get("file"), form.get("profile")
    if isinstance(upload, UploadFile) == isinstance(profile, UploadFile):
        raise ProblemError(422, "attach exactly one of the multipart fields 'file' "
                                "(model outputs) or 'profile' (a baseline profile file)")
    common = {"name": _text(form.get("name")), "reason": _text(form.get("reason")),
              "replace": _flag(form.get("replace"), "replace"),
              "accept_collapsed": _flag(form.get("accept_collapsed"), "accept_collapsed")}
    if isinstance(profile, UploadFile):
        return BaselineRequest(profile=await profile.read(), **common)
    filename = upload.filename or ""
    data = await upload.read()
    try:
        fmt = format_for(filename, _text(form.get("format")))
        documents = await run_in_threadpool(parse_documents, data, fmt,
                                            _text(form.get("field")) or "text",
                                            get_settings().max_reference_document_chars)
    except DocumentParseError as exc:
        raise ProblemError(422, f"file {filename!r}: {exc}") from None
    return BaselineRequest(documents=documents, **common)


@router.post("/models/{name}/baseline", status_code=201, openapi_extra=_CREATE_BODY,
             summary="Set (or explicitly re-pin) the model's baseline")
async def create_baseline(name: str, request: Request, principal: AdminPrincipal,
                          session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    check_model_access(principal, "admin", name)
    model = await run_in_threadpool(get_model, session, name)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        req = await _from_json(request)
    elif content_type == "multipart/form-data":
        req = await _from_upload(request)
    else:
        raise ProblemError(415, "send application/json ({\"documents\": [...]} or "
                                "{\"from\": ..., \"to\": ...}) or multipart/form-data with a "
                                "'file' or 'profile' field")
    await run_in_threadpool(service.refuse_if_pinned, session, model, req.replace)
    return await run_in_threadpool(service.create_baseline, session, settings, model, req,
                                   principal.label)


@router.get("/models/{name}/baseline", summary="The model's baseline, its status and history")
def get_baseline(name: str, _: ReadPrincipal, session: SessionDep) -> dict[str, Any]:
    return service.baseline_view(session, get_model(session, name))
