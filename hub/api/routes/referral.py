"""Submit a referral Bundle; read a referral's timeline."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel

from hub.api.deps import CallerDep, ServicesDep

router = APIRouter(prefix="/v1", tags=["referrals"])


class ReferralAccepted(BaseModel):
    referral_id: str
    message_id: str
    status: str
    timeline: str


def _example() -> dict[str, Any]:
    try:
        from schemas.examples import EXAMPLES  # type: ignore[import-not-found]

        return {k: {"summary": k, "value": v} for k, v in EXAMPLES.items()}
    except Exception:
        return {}


@router.post(
    "/referrals",
    status_code=202,
    response_model=ReferralAccepted,
    summary="Submit a referral (FHIR R4B message Bundle)",
    responses={
        422: {"description": "Profile violations, each with JSON path and rule"},
        413: {"description": "Bundle too large"},
    },
)
async def submit_referral(
    request: Request,
    caller: CallerDep,
    services: ServicesDep,
    bundle: dict[str, Any] = Body(..., openapi_examples=_example(), media_type="application/fhir+json"),
) -> ReferralAccepted:
    raw = await request.body()
    accepted = await services.submit(caller, bundle, raw)
    return ReferralAccepted(
        referral_id=accepted.referral_id,
        message_id=accepted.message_id,
        status=accepted.status,
        timeline=f"/v1/referrals/{accepted.referral_id}",
    )


@router.get("/referrals/{referral_id}", summary="A referral's status timeline across recipients")
async def get_referral(referral_id: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    return services.queries.referral(caller, referral_id)
