"""Inbox of a recipient agency, opening a delivery's sealed content, and task status transitions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from hub.api.deps import Party, Recipient, ServicesDep
from hub.api.problem import problem_responses
from hub.domain.error import Unavailable
from hub.services.listing import ListFilter
from hub.services.task import ChangeStatus

router = APIRouter(prefix="/v1", tags=["tasks"])


class StatusChange(BaseModel):
    status: str = Field(examples=["received"])
    reason: str | None = Field(default=None, max_length=500, examples=["outside our catchment"])
    business_status: str | None = Field(default=None, examples=["appointment-booked"])
    feedback: str | None = Field(default=None, max_length=4000, examples=["Seen on 3 March; plan agreed."])

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"status": "received"},
                {"status": "rejected", "reason": "outside our catchment"},
                {"status": "completed", "feedback": "Assessment done; follow-up booked in 2 weeks."},
            ]
        }
    }


class StatusChanged(BaseModel):
    task_id: str
    referral_id: str
    from_status: str = Field(examples=["requested"])
    to_status: str = Field(examples=["received"])
    event_id: str


class InboxItem(BaseModel):
    delivery_id: str
    task_id: str
    referral_id: str
    sender_org: str = Field(examples=["school-songjiang-no2-middle"])
    status: str = Field(examples=["requested"])
    business_status: str | None = Field(default=None, examples=["delivered"])
    priority: str = Field(examples=["urgent"])
    risk_level: int = Field(examples=[3])
    reasons: list[str] = Field(examples=[["screening-positive"]])
    purpose: str = Field(examples=["treatment"])
    legal_basis: str = Field(examples=["consent"])
    categories: list[str] = Field(examples=[["demographics", "screening", "risk"]])
    town: str | None = None
    created_at: datetime
    ack_due: datetime | None = None
    first_contact_due: datetime | None = None
    sla_kind: str | None = Field(default=None, examples=["acknowledge"])
    sla_due: datetime | None = None
    sla_seconds_left: int | None = Field(default=None, description="Negative: overdue", examples=[1740])
    sla_breached: bool = False


class InboxPage(BaseModel):
    items: list[InboxItem]
    count: int
    total: int
    limit: int
    offset: int
    next_offset: int | None = None


class OpenedContent(BaseModel):
    task_id: str
    delivery_id: str
    referral_id: str
    available: bool
    unavailable_reason: str | None = Field(default=None, examples=["not-sealed-yet"])
    first_opening: bool = False
    content: dict[str, Any] | None = Field(default=None, description="The minimised FHIR Bundle")


@router.get(
    "/inbox",
    response_model=InboxPage,
    summary="Deliveries addressed to the caller's agency: pending first, most urgent first",
    responses=problem_responses(401, 403, 422),
)
def inbox(
    caller: Recipient,
    services: ServicesDep,
    status: Annotated[list[str] | None, Query(examples=["requested"])] = None,
    risk_level: Annotated[int | None, Query(ge=1, le=4)] = None,
    priority: Annotated[str | None, Query(examples=["urgent"])] = None,
    town: Annotated[str | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="Delivered at or after")] = None,
    until: Annotated[datetime | None, Query(description="Delivered before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    assert services.listings is not None
    flt = ListFilter(
        statuses=tuple(status or ()),
        risk_level=risk_level,
        priority=priority,
        town=town,
        since=since,
        until=until,
    )
    return services.listings.inbox(caller, flt, limit, offset).as_dict()


@router.get(
    "/tasks/{task_id}/content",
    response_model=OpenedContent,
    summary="Open the sealed, minimised view of a delivery (audited; the referrer is notified)",
    responses=problem_responses(401, 403, 404),
)
async def open_content(task_id: str, caller: Recipient, services: ServicesDep) -> OpenedContent:
    if services.open_delivery is None:
        raise Unavailable("opening deliveries is not configured", code="open-unavailable")
    opened = await services.open_delivery(caller, task_id)
    return OpenedContent(
        task_id=opened.delivery.task_id,
        delivery_id=opened.delivery.delivery_id,
        referral_id=opened.delivery.referral_id,
        available=opened.content is not None,
        unavailable_reason=opened.unavailable,
        first_opening=opened.first_opening,
        content=opened.content,
    )


@router.post(
    "/tasks/{task_id}/status",
    status_code=202,
    response_model=StatusChanged,
    summary="Move a referral task through its lifecycle",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def change_status(
    task_id: str, body: StatusChange, caller: Party, services: ServicesDep
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
