"""Routes: a model's baseline (its own known-good outputs), set and read.

``POST /models/{name}/baseline`` accepts
* ``application/json``: ``{"documents": [...]}``, a bare JSON list of documents, or
  ``{"from": ts, "to": ts}`` over the model's stored samples; optional ``name``,
  ``reason`` and ``replace``;
* ``multipart/form-data``: ``file`` (.jsonl/.txt/.csv documents) or ``profile`` (a baseline
  profile file from ``collapsewatch baseline build``), with the same optional fields.
A model that already has a baseline keeps it unless ``replace`` is true (re-pinning is
explicit, and recorded with who, when and the old and new sha256).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
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
from service.domain.catalog import get_model
from service.domain.references import DocumentParseError, format_for, parse_documents
from service.domain.schemas import Description, Text, UtcDatetime
from service.domain.tables import MonitoredModel

router = APIRouter(tags=["baselines"])

BaselineName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class BaselineCreate(BaseModel):
    """Exactly one source: ``documents``, or the time range ``from``..``to``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    documents: list[Text] | None = Field(default=None, description="model outputs, one each")
    from_: UtcDatetime = Field(default=None, alias="from",
                               description="range start over stored samples (inclusive)")
    to: UtcDatetime = Field(default=None, description="range end (inclusive)")
    name: BaselineName | None = None
    reason: Description | None = None
    replace: bool = Field(default=False, description="required to replace an existing baseline")

    @model_validator(mode="after")
    def _one_source(self) -> BaselineCreate:
        has_range = self.from_ is not None or self.to is not None
        if self.documents is not None and has_range:
            raise ValueError("send either documents or from/to, not both")
        if self.documents is None and not has_range:
            raise ValueError("send documents, or from and to (a time range of stored samples)")
        if has_range and (self.from_ is None or self.to is None):
            raise ValueError("a time range needs both from and to")
        return self


_MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "model outputs: .jsonl, .txt (one per line) or .csv"},
        "profile": {"type": "string", "format": "binary",
                    "description": "a baseline profile built with `collapsewatch baseline build`"},
        "name": {"type": "string"}, "reason": {"type": "string"},
        "replace": {"type": "boolean", "default": False},
        "field": {"type": "string", "default": "text"},
        "format": {"type": "string", "enum": ["jsonl", "txt", "csv"]},
    },
}
_CREATE_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": BaselineCreate.model_json_schema(by_alias=True)},
    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
}}}


class _Request(BaseModel):
    """A parsed POST: one of documents, a range, or a profile file."""

    documents: list[str] | None = None
    start: datetime | None = None
    end: datetime | None = None
    profile: bytes | None = None
    name: str | None = None
    reason: str | None = None
    replace: bool = False


def _invalid(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])


async def _from_json(request: Request) -> _Request:
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
    return _Request(documents=body.documents, start=body.from_, end=body.to, name=body.name,
                    reason=body.reason, replace=body.replace)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _flag(value: Any, field: str) -> bool:
    text = (_text(value) or "false").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ProblemError(422, f"{field}: expected true or false, got {value!r}")


async def _from_upload(request: Request) -> _Request:
    form = await request.form()
    upload, profile = form.get("file"), form.get("profile")
    if isinstance(upload, UploadFile) == isinstance(profile, UploadFile):
        raise ProblemError(422, "attach exactly one of the multipart fields 'file' "
                                "(model outputs) or 'profile' (a baseline profile file)")
    common = {"name": _text(form.get("name")), "reason": _text(form.get("reason")),
              "replace": _flag(form.get("replace"), "replace")}
    if isinstance(profile, UploadFile):
        return _Request(profile=await profile.read(), **common)
    filename = upload.filename or ""
    data = await upload.read()
    try:
        fmt = format_for(filename, _text(form.get("format")))
        documents = await run_in_threadpool(parse_documents, data, fmt,
                                            _text(form.get("field")) or "text")
    except DocumentParseError as exc:
        raise ProblemError(422, f"file {filename!r}: {exc}") from None
    return _Request(documents=documents, **common)


def _view(session, model: MonitoredModel) -> dict[str, Any]:
    state = service.baseline_state(session, model)
    return {"model": model.name, **state, "history": service.baseline_history(session, model)}


def _create(session, settings, model: MonitoredModel, req: _Request, actor: str) -> dict:
    """Build (or read) the profile, then pin it; runs in a worker thread."""
    kwargs: dict[str, Any] = {}
    if req.profile is not None:
        profile = service.profile_from_upload(session, model, req.profile)
        source = "upload"
    else:
        name = req.name or service.default_name(session, model)
        if req.documents is not None:
            documents, source = req.documents, "upload"
        else:
            found = service.documents_in_range(session, model, req.start, req.end, settings)
            documents, source = found.texts, "range"
            kwargs = {"range_from": req.start, "range_to": req.end,
                      "last_sample_id": found.last_id}
        profile = service.build_profile(session, model, documents, name, settings)
    try:
        service.pin_profile(session, model.id, profile, source=source, actor=actor,
                            reason=req.reason, replace=req.replace, **kwargs)
    except service.AlreadyPinned as exc:
        session.rollback()
        raise _already_pinned(model.name, str(exc)) from None
    session.commit()
    session.refresh(model)
    return _view(session, model)


def _already_pinned(model_name: str, sha256: str) -> ProblemError:
    return ProblemError(409, f"model {model_name!r} already has a baseline (sha256 {sha256}); "
                             "send \"replace\": true to re-pin it (the change is recorded)")


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
    if model.baseline_id is not None and not req.replace:
        current = await run_in_threadpool(service.baseline_state, session, model)
        raise _already_pinned(model.name, current["baseline"]["sha256"])
    return await run_in_threadpool(_create, session, settings, model, req, principal.label)


@router.get("/models/{name}/baseline", summary="The model's baseline, its status and history")
def get_baseline(name: str, _: ReadPrincipal, session: SessionDep) -> dict[str, Any]:
    return _view(session, get_model(session, name))
