"""Staff sign-in for the API and pages: a server-side session behind an HttpOnly cookie."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from hub.api.deps import SESSION_COOKIE, AnyCaller, ServicesDep, client_address
from hub.api.problem import problem_responses
from hub.domain.error import Unavailable
from hub.services.identity import NewSession, StaffCaller

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64, examples=["mhc.clinician"])
    password: str = Field(min_length=1, max_length=200, examples=["correct horse battery staple"])


class SessionInfo(BaseModel):
    user_id: str | None = None
    username: str = Field(examples=["mhc.clinician"])
    org_id: str = Field(examples=["camhs-songjiang-mhc"])
    role: str = Field(examples=["clinician"])
    csrf_token: str | None = Field(
        default=None, description="Send as X-CSRF-Token with every state-changing request of this session"
    )
    expires_at: datetime | None = None


def cookie_secure(request: Request, mode: str) -> bool:
    if mode == "always":
        return True
    if mode == "never":
        return False
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


def set_session_cookie(response: Response, request: Request, session: NewSession, mode: str) -> None:
    # No max-age: a browser-session cookie. The server enforces idle and absolute expiry itself.
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request, mode),
        path="/",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")


@router.post(
    "/login",
    response_model=SessionInfo,
    summary="Sign in with a username and password; sets the session cookie",
    responses=problem_responses(401, 422, 429),
)
def login(body: LoginRequest, request: Request, response: Response, services: ServicesDep) -> SessionInfo:
    if services.identity is None:
        raise Unavailable("staff sign-in is not configured", code="identity-unavailable")
    session = services.identity.login(body.username, body.password, client_address(request))
    set_session_cookie(response, request, session, services.cookie_secure)
    return SessionInfo(
        user_id=session.user.user_id,
        username=session.user.username,
        org_id=session.user.org_id,
        role=session.user.role.value,
        csrf_token=session.csrf_token,
        expires_at=session.expires_at,
    )


@router.post("/logout", status_code=204, summary="End the session", responses=problem_responses(401, 403))
def logout(request: Request, caller: AnyCaller, services: ServicesDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token and services.identity is not None:
        services.identity.logout(token)
    response = Response(status_code=204)
    clear_session_cookie(response)
    return response


@router.get("/me", response_model=SessionInfo, summary="Who the caller is", responses=problem_responses(401))
def me(caller: AnyCaller) -> dict[str, Any]:
    staff = caller if isinstance(caller, StaffCaller) else None
    return {
        "user_id": staff.user_id if staff else None,
        "username": caller.label,
        "org_id": caller.org_id,
        "role": caller.role,
        "csrf_token": staff.csrf_token if staff else None,
    }
