"""Follow-up visits after completion, SLA escalations of an agency, and consent updates (revocation).

Services come from ``request.app.state.lifecycle`` (a ``LifecycleServices``), wired by bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, Field

from hub.api.deps import Party, Recipient, Submitter
from hub.services.consent import SubmitConsentUpdate
from hub.services.sla import FOLLOW_UP_OUTCOMES, RecordFollowUp

router = APIRouter(prefix="/v1", tags=["follow-ups and escalations"])


@dataclass(frozen=True)
class LifecycleServices:
    record_follow_up: RecordFollowUp
    submit_consent: SubmitConsentUpdate
    follow_ups_of: Any  # Callable[[org, status], list[dict]]
    escalations_of: Any  # Callable[[org], list[dict]]


def _services(request: Request) -> LifecycleServices:
    services: LifecycleServices = request.app.state.lifecycle
    return services


Lifecycle = Annotated[LifecycleServices, Depends(_services)]


class FollowUpDone(BaseModel):
    outcome: str = Field(examples=["visited"], description="one of: " + ", ".join(FOLLOW_UP_OUTCOMES))


@router.get("/follow-ups", summary="Follow-up visits owed by the caller's agency")
def list_follow_ups(
    caller: Party, services: Lifecycle, status: str | None = Query(default=None, examples=["due"])
) -> dict[str, Any]:
    items = services.follow_ups_of(caller.org_id, status)
    return {"items": items, "count": len(items)}


@router.post("/follow-ups/{followup_id}/done", status_code=202, summary="Record a follow-up visit as done")
async def follow_up_done(
    followup_id: str, body: FollowUpDone, caller: Party, services: Lifecycle
) -> dict[str, Any]:
    event = await services.record_follow_up(caller, followup_id, body.outcome)
    return {"followup_id": event.followup_id, "outcome": event.outcome, "event_id": event.event_id}


@router.get("/escalations", summary="SLA reminders and escalations concerning the caller's agency")
def list_escalations(caller: Recipient, services: Lifecycle) -> dict[str, Any]:
    items = services.escalations_of(caller.org_id)
    return {"items": items, "count": len(items)}


@router.post(
    "/consents",
    status_code=202,
    summary="Send a consent-update message (FHIR Bundle): record, change or revoke consents",
    responses={422: {"description": "Profile violations"}},
)
async def consent_update(
    request: Request,
    caller: Submitter,
    services: Lifecycle,
    bundle: dict[str, Any] = Body(..., media_type="application/fhir+json"),
) -> dict[str, Any]:
    events = await services.submit_consent(caller, bundle, await request.body())
    return {"consents": [{"consent_id": e.consent_id, "status": e.status} for e in events]}
