"""Auditor endpoints: search the hash-chained audit log and verify it; services from `app.state.audit`.

The routes take an ``AuditQueries`` through ``AuditDep``, which reads ``request.app.state.audit`` (set by
bootstrap). Who may call them (the auditor role) is decided where the router is included.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from hub.domain.error import Unavailable
from hub.services.audit import MAX_PAGE, AuditQueries, AuditSearch
from schemas.audit import AuditType

router = APIRouter(prefix="/v1/audit", tags=["audit"])


def get_audit(request: Request) -> AuditQueries:
    audit = getattr(request.app.state, "audit", None)
    if audit is None:
        raise Unavailable("the audit trail is not configured in this process", code="audit-unavailable")
    return audit


AuditDep = Annotated[AuditQueries, Depends(get_audit)]


class AuditItem(BaseModel):
    seq: int = Field(description="place in the hash chain")
    hash: str = Field(description="sha256 chain hash of this record (hex)")
    # A plain object, not the AuditEvent model: an altered record must still be shown to the auditor.
    event: dict[str, Any] = Field(description="the AuditEvent exactly as chained")


class AuditEventPage(BaseModel):
    items: list[AuditItem]
    count: int
    limit: int
    next_after: int | None = Field(description="pass as `after` for the next page; null at the end")


class ChainProblemOut(BaseModel):
    kind: str = Field(examples=["edited"])
    seq: int | None = Field(examples=[42])
    checkpoint: int | None = None
    detail: str = Field(examples=["the record does not match its hash"])


class ChainReportOut(BaseModel):
    ok: bool
    events: int
    checkpoints: int
    head_seq: int
    head_hash: str
    sealed_seq: int = Field(description="last seq covered by a valid signed checkpoint")
    unsealed: int = Field(description="records after it, protected by their links only")
    problems: list[ChainProblemOut]


# Plain `def` routes: FastAPI runs them in its thread pool, so database reads never block the loop.


@router.get("/events", response_model=AuditEventPage, summary="Search audit events in chain order")
def events(
    audit: AuditDep,
    referral_id: str | None = Query(default=None, max_length=128, examples=["ref-7c1f0a"]),
    agency: str | None = Query(
        default=None, max_length=128, description="organisation acting or involved (e.g. the recipient)"
    ),
    since: datetime | None = Query(default=None, description="inclusive; ISO 8601 with offset"),
    until: datetime | None = Query(default=None, description="exclusive; ISO 8601 with offset"),
    type: AuditType | None = Query(default=None),
    after: int = Query(default=0, ge=0, description="the `next_after` of the previous page"),
    limit: int = Query(default=100, ge=1, le=MAX_PAGE),
) -> AuditEventPage:
    page = audit.search(
        AuditSearch(
            referral_id=referral_id,
            agency=agency,
            since=since,
            until=until,
            type=type,
            after_seq=after,
            limit=limit,
        )
    )
    return AuditEventPage(
        items=[AuditItem(**item) for item in page.items],
        count=len(page.items),
        limit=limit,
        next_after=page.next_after,
    )


@router.get(
    "/verify",
    response_model=ChainReportOut,
    summary="Recompute the hash chain and check its signed checkpoints",
    description="Always 200: `ok` says whether the chain is intact, `problems` what is wrong and where.",
)
def verify(audit: AuditDep) -> ChainReportOut:
    return ChainReportOut(**audit.verify().as_dict())
