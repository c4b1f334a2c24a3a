"""Inbox of a recipient agency and task status transitions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from hub.api.deps import CallerDep, ServicesDep
from hub.services.task import ChangeStatus

router = APIRouter(prefix="/v1", tags=["tasks"])


class StatusChange(BaseModel):
    status: str = Field(examples=["received"])
    reason: str | None = Field(default=None, max_length=500)
    business_status: str | None = Field(default=None, examples=["appointment-booked"])
    feedback: str | None = Field(default=None, max_length=4000)


class StatusChanged(BaseModel):
    task_id: str
    referral_id: str
    from_status: str
    to_status: str
    event_id: str


@router.get("/inbox", summary="Deliveries addressed to the caller's agency")
async def inbox(
    caller: CallerDep,
    services: ServicesDep,
    status: str | None = Query(default=None, examples=["requested"]),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0),
) -> dict[str, Any]:
    items = services.queries.inbox(caller, status, limit, offset)
    return {"items": items, "limit": limit, "offset": offset, "count": len(items)}


@router.post(
    "/tasks/{task_id}/status",
    status_code=202,
    response_model=StatusChanged,
    summary="Move a referral task through its lifecycle",
    responses={409: {"description": "Not allowed from the current status"}},
)
async def change_status(
    task_id: str, body: StatusChange, caller: CallerDep, services: ServicesDep
) -> StatusChanged:
    event = await services.transition(
        caller,
        ChangeStatus(
            task_id=task_id,
            status=body.status,
            reason=body.reason,
            business_status=body.business_status,
            feedback=body.feedback,
        ),
    )
    return StatusChanged(
        task_id=event.task_id,
        referral_id=event.referral_id,
        from_status=event.from_status,
        to_status=event.to_status,
        event_id=event.event_id,
    )
