"""Shapes of a baseline request: documents, a time range over stored samples, or a profile."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.domain.schemas import Description, Text, UtcDatetime

BaselineName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class BaselineCreate(BaseModel):
    """The JSON body: exactly one source, ``documents`` or the time range ``from``..``to``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    documents: list[Text] | None = Field(default=None, description="model outputs, one each")
    from_: UtcDatetime = Field(default=None, alias="from",
                               description="range start over stored samples (inclusive)")
    to: UtcDatetime = Field(default=None, description="range end (inclusive)")
    name: BaselineName | None = None
    reason: Description | None = None
    replace: bool = Field(default=False, description="required to replace an existing baseline")
    accept_collapsed: bool = Field(
        default=False, description="pin a baseline whose own profile reads collapse against "
                                   "human on purpose (refused otherwise; recorded on the pin)")

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


class BaselineRequest(BaseModel):
    """A parsed request, whatever it came as: documents, a range, or a profile file."""

    documents: list[str] | None = None
    start: datetime | None = None
    end: datetime | None = None
    profile: bytes | None = None
    name: str | None = None
    reason: str | None = None
    replace: bool = False
    accept_collapsed: bool = False

    @classmethod
    def from_body(cls, body: BaselineCreate) -> BaselineRequest:
        return cls(documents=body.documents, start=body.from_, end=body.to, name=body.name,
                   reason=body.reason, replace=body.replace,
                   accept_collapsed=body.accept_collapsed)
