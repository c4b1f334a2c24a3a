"""Consent grant and revocation over the API: NOT IMPLEMENTED YET (501), by design of the work split.

Revocation must withdraw unopened deliveries in the pipeline (destroying their wrapped keys), which
the pipeline owner is building; until it lands, these endpoints authenticate and authorise the caller
and then answer 501 problem details, so that no client believes a revocation took effect.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hub.api.deps import Submitter
from hub.api.problem import problem_responses
from hub.domain.error import HubError

router = APIRouter(prefix="/v1", tags=["consents"])


class ConsentGrant(BaseModel):
    student_pseudonym: str = Field(examples=["psn:k1:ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"])
    grantor: str = Field(examples=["guardian"])
    recipients: list[str] = Field(examples=[["camhs"]])
    categories: list[str] = Field(examples=[["demographics", "screening", "risk"]])
    purposes: list[str] = Field(examples=[["treatment"]])
    start: str | None = Field(default=None, examples=["2025-03-01"])
    end: str | None = Field(default=None, examples=["2026-02-28"])
    student_assent: bool = False


class ConsentRevocation(BaseModel):
    reason: str | None = Field(default=None, max_length=500, examples=["guardian withdrew consent"])


class NotImplementedYet(HubError):
    def __init__(self, what: str) -> None:
        super().__init__(
            message=f"{what} over the API is not implemented yet; consents travel inside referral Bundles",
            code="not-implemented",
            status=501,
        )


@router.post(
    "/consents",
    status_code=201,
    summary="Record a consent (NOT IMPLEMENTED: answers 501)",
    responses=problem_responses(401, 403, 422, 501),
)
def grant_consent(body: ConsentGrant, caller: Submitter) -> dict[str, Any]:
    raise NotImplementedYet("recording a consent")


@router.post(
    "/consents/{consent_id}/revoke",
    status_code=202,
    summary="Revoke a consent (NOT IMPLEMENTED: answers 501)",
    responses=problem_responses(401, 403, 422, 501),
)
def revoke_consent(consent_id: str, body: ConsentRevocation, caller: Submitter) -> dict[str, Any]:
    raise NotImplementedYet("revoking a consent")
