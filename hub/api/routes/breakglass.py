"""Break-glass review: a supervisor reviews the emergency disclosures made at their agency's request."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from hub.api.deps import ServicesDep, Supervisor
from hub.api.problem import problem_responses
from hub.domain.error import Unavailable
from hub.services.breakglass import GUARDIAN_NOTICES, REVIEW_OUTCOMES, BreakGlassReviews

router = APIRouter(prefix="/v1", tags=["break-glass review"])


class ReviewBody(BaseModel):
    outcome: str = Field(examples=["justified"], description="one of: " + ", ".join(REVIEW_OUTCOMES))
    guardian_notice: str = Field(
        examples=["informed"],
        description="one of: " + ", ".join(GUARDIAN_NOTICES) + " (not told because telling would endanger "
        "the child)",
    )


def _reviews(services: Any) -> BreakGlassReviews:
    if services.break_glass is None:
        raise Unavailable("break-glass review is not configured on this hub", code="not-configured")
    reviews: BreakGlassReviews = services.break_glass
    return reviews


@router.get(
    "/break-glass",
    summary="Emergency (break-glass) disclosures requested by the caller's agency, with their reviews",
    responses=problem_responses(401, 403, 422),
)
def list_break_glass(
    caller: Supervisor,
    services: ServicesDep,
    status: str | None = Query(default=None, examples=["pending"], description="pending | reviewed"),
) -> dict[str, Any]:
    items = _reviews(services).uses(caller, status)
    return {"items": items, "count": len(items)}


@router.post(
    "/break-glass/{delivery_id}/review",
    status_code=201,
    summary="Record the supervisor's review of one emergency disclosure (once per disclosure)",
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def review_break_glass(
    delivery_id: str, body: ReviewBody, caller: Supervisor, services: ServicesDep
) -> dict[str, Any]:
    review = await _reviews(services).review(caller, delivery_id, body.outcome, body.guardian_notice)
    return review.as_dict()
