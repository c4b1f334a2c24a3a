"""Staff user administration for admins (the CLI `hub users` does the same from a shell)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hub.api.deps import Admin, ServicesDep
from hub.api.problem import problem_responses
from hub.domain.error import Unavailable
from hub.services.identity import IdentityService, public_user

router = APIRouter(prefix="/v1/users", tags=["users"])


class UserOut(BaseModel):
    user_id: str
    username: str = Field(examples=["mhc.clinician"])
    org_id: str = Field(examples=["camhs-songjiang-mhc"])
    role: str = Field(examples=["clinician"])
    display_name: str
    disabled: bool
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(min_length=3, max_length=64, examples=["mhc.nurse"])
    org_id: str = Field(min_length=1, max_length=100, examples=["camhs-songjiang-mhc"])
    role: str = Field(examples=["clinician"])
    display_name: str = Field(default="", max_length=100)


class UserCreated(UserOut):
    initial_password: str = Field(description="Shown once; the user should change it")


def _identity(services: Any) -> IdentityService:
    if services.identity is None:
        raise Unavailable("staff sign-in is not configured", code="identity-unavailable")
    identity: IdentityService = services.identity
    return identity


@router.get(
    "", response_model=list[UserOut], summary="All staff users", responses=problem_responses(401, 403)
)
def list_users(caller: Admin, services: ServicesDep) -> list[dict[str, Any]]:
    return [public_user(u) for u in _identity(services).users(caller)]


@router.post(
    "",
    status_code=201,
    response_model=UserCreated,
    summary="Create a staff user with a generated initial password",
    responses=problem_responses(401, 403, 409, 422),
)
def create_user(body: UserCreate, caller: Admin, services: ServicesDep) -> dict[str, Any]:
    user, password = _identity(services).add_user(body.username, body.org_id, body.role, body.display_name)
    return {**public_user(user), "initial_password": password}
