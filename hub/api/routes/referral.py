"""Submit a referral Bundle; list the referrals an agency sent; read a referral's timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from pydantic import BaseModel, Field

from hub.api.deps import Party, Sender, ServicesDep, Submitter
from hub.api.problem import problem_responses
from hub.services.listing import ListFilter

router = APIRouter(prefix="/v1", tags=["referrals"])


class ReferralAccepted(BaseModel):
    referral_id: str = Field(examples=["ref-5f0c1d2e3a4b"])
    message_id: str = Field(examples=["mh-3b1f7a9c2d10"])
    status: str = Field(examples=["accepted"])
    timeline: str = Field(examples=["/v1/referrals/ref-5f0c1d2e3a4b"])


class SentDelivery(BaseModel):
    delivery_id: str
    task_id: str
    recipient_org: str = Field(examples=["camhs-songjiang-mhc"])
    status: str = Field(examples=["received"])
    business_status: str | None = None
    purpose: str = Field(examples=["treatment"])
    legal_basis: str = Field(examples=["consent"])
    created_at: datetime
    ack_due: datetime | None = None
    first_contact_due: datetime | None = None
    acknowledged_at: datetime | None = None
    decided_at: datetime | None = None
    first_contact_at: datetime | None = None
    closed_at: datetime | None = None


class SentReferral(BaseModel):
    referral_id: str = Field(examples=["ref-5f0c1d2e3a4b"])
    sender_org: str = Field(examples=["school-songjiang-no2-middle"])
    risk_level: int = Field(examples=[3])
    priority: str = Field(examples=["urgent"])
    reasons: list[str] = Field(examples=[["screening-positive", "suicidal-ideation"]])
    town: str | None = Field(default=None, examples=["yueyang"])
    submitted_at: datetime
    routed_at: datetime | None = None
    deliveries: list[SentDelivery]


class SentPage(BaseModel):
    items: list[SentReferral]
    count: int = Field(examples=[1])
    total: int = Field(examples=[1])
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])
    next_offset: int | None = Field(default=None, examples=[None])


def _example() -> dict[str, Any]:
    try:
        from schemas.examples import EXAMPLES

        return {k: {"summary": k, "value": v} for k, v in EXAMPLES.items()}
    except Exception:
        return {}


@router.post(
    "/referrals",
    status_code=202,
    response_model=ReferralAccepted,
    summary="Submit a referral (FHIR R4B message Bundle)",
    responses=problem_responses(401, 403, 413, 422, 429, 503),
)
async def submit_referral(
    request: Request,
    caller: Submitter,
    services: ServicesDep,
    x_qixin_signature: Annotated[
        str | None,
        Header(
            description="The sender's Ed25519 signature over the exact body: `ed25519:<key id>:<base64url>` "
            "of `qixin-sig/v1\\0submission\\0<body>`",
        ),
    ] = None,
    bundle: dict[str, Any] = Body(..., openapi_examples=_example(), media_type="application/fhir+json"),
) -> ReferralAccepted:
    if services.submit_limiter is not None:
        services.submit_limiter.take(caller.org_id)
    raw = await request.body()
    accepted = await services.submit(caller, bundle, raw, x_qixin_signature)
    return ReferralAccepted(
        referral_id=accepted.referral_id,
        message_id=accepted.message_id,
        status=accepted.status,
        timeline=f"/v1/referrals/{accepted.referral_id}",
    )


@router.get(
    "/referrals",
    response_model=SentPage,
    summary="Referrals the caller's agency sent, newest first, with each recipient's status",
    responses=problem_responses(401, 403, 422),
)
def list_referrals(
    caller: Sender,
    services: ServicesDep,
    status: Annotated[
        list[str] | None, Query(description="Only referrals with a delivery in one of these statuses")
    ] = None,
    risk_level: Annotated[int | None, Query(ge=1, le=4)] = None,
    town: Annotated[str | None, Query(examples=["yueyang"])] = None,
    since: Annotated[datetime | None, Query(description="Submitted at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="Submitted before (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    assert services.listings is not None
    flt = ListFilter(statuses=tuple(status or ()), risk_level=risk_level, town=town, since=since, until=until)
    return services.listings.sent(caller, flt, limit, offset).as_dict()


@router.get(
    "/referrals/{referral_id}",
    summary="A referral's status timeline across recipients",
    responses=problem_responses(401, 403, 404),
)
def get_referral(referral_id: str, caller: Party, services: ServicesDep) -> dict[str, Any]:
    return services.queries.referral(caller, referral_id)
