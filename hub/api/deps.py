"""FastAPI dependencies in one place: the services container, the caller, and role checks.

A caller is either an agency system (``Authorization: Bearer <API key>``, role ``system``) or a
signed-in staff user (session cookie). Cookie-authenticated requests that change state must also
carry the session's CSRF token (``X-CSRF-Token`` header; pages put it in a hidden form field).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from hub.domain.error import Forbidden, Unauthenticated
from hub.services.access import OpenDelivery
from hub.services.breakglass import BreakGlassReviews
from hub.services.identity import IdentityService, StaffCaller, csrf_matches
from hub.services.listing import Listings
from hub.services.metric import DashboardMetrics
from hub.services.port import Caller
from hub.services.query import Queries
from hub.services.submission import SubmitReferral
from hub.services.task import TransitionTask
from hub.services.throttle import TokenBucketLimiter

SESSION_COOKIE = "qx_session"
LANG_COOKIE = "qx_lang"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ApiServices:
    submit: SubmitReferral
    transition: TransitionTask
    queries: Queries
    # Callable[[str], Caller | None], or an async one (no thread hand-off per request)
    authenticate: Any
    health: Any  # Callable[[], Awaitable[dict[str, Any]]]
    identity: IdentityService | None = None
    listings: Listings | None = None
    metrics: DashboardMetrics | None = None
    open_delivery: OpenDelivery | None = None
    submit_limiter: TokenBucketLimiter | None = None
    break_glass: BreakGlassReviews | None = None
    cookie_secure: str = "auto"
    # The audit colleague's services (search, verify) once wired; None until then.
    audit: Any = None


# Dependencies that do no blocking I/O are `async def`: FastAPI runs a plain `def` dependency in the
# thread pool, a hand-off that cost more than the work itself on every request (bench/README.md).
async def get_services(request: Request) -> ApiServices:
    services: ApiServices = request.app.state.services
    return services


ServicesDep = Annotated[ApiServices, Depends(get_services)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def session_caller(request: Request, services: ApiServices) -> StaffCaller | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or services.identity is None:
        return None
    return services.identity.resolve(token)


async def get_caller(request: Request, services: ServicesDep) -> Caller:
    token = bearer_token(request)
    if token is not None:
        caller = await _api_key_caller(services.authenticate, token)
        if caller is None:
            raise Unauthenticated("the API key is unknown or disabled")
        return caller
    if request.headers.get("authorization"):
        raise Unauthenticated("send 'Authorization: Bearer <agency API key>'")
    staff = await run_in_threadpool(session_caller, request, services)  # a session lookup in SQL
    if staff is None:
        raise Unauthenticated("send 'Authorization: Bearer <agency API key>' or sign in (session cookie)")
    if request.method not in SAFE_METHODS and not csrf_matches(
        staff.csrf_token, request.headers.get("x-csrf-token")
    ):
        raise Forbidden(
            "a signed-in request that changes state needs the X-CSRF-Token header", code="csrf-failed"
        )
    return staff


async def _api_key_caller(authenticate: Any, token: str) -> Caller | None:
    """An async authenticator answers on the loop (from its cache); a plain one may query the
    database, so it runs in the thread pool."""
    if inspect.iscoroutinefunction(authenticate):
        caller: Caller | None = await authenticate(token)
    else:
        caller = await run_in_threadpool(authenticate, token)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_roles(*roles: str) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency that lets only these roles through (403 ``role-forbidden`` otherwise)."""
    allowed = frozenset(roles)

    async def check(caller: CallerDep) -> Caller:
        if caller.role not in allowed:
            raise Forbidden(
                f"role '{caller.role}' may not use this endpoint (allowed: {', '.join(sorted(allowed))})",
                code="role-forbidden",
            )
        return caller

    return check


def client_address(request: Request) -> str:
    """The address login throttling keys on (the direct peer; a proxy must be configured to pass it)."""
    return request.client.host if request.client else "unknown"


# The roles of each endpoint family, in one place (the authorisation matrix test reads these too).
SUBMITTERS = ("system", "referrer")
RECIPIENTS = ("system", "clinician", "case-worker", "supervisor")
PARTIES = ("system", "clinician", "case-worker", "supervisor", "referrer")
SENDERS = ("system", "referrer", "supervisor")
MONITORS = ("district-monitor", "supervisor")
AUDITORS = ("auditor",)
ADMINS = ("admin",)
STAFF_AND_SYSTEMS = (
    "system",
    "clinician",
    "case-worker",
    "referrer",
    "supervisor",
    "district-monitor",
    "auditor",
    "admin",
)

Submitter = Annotated[Caller, Depends(require_roles(*SUBMITTERS))]
Recipient = Annotated[Caller, Depends(require_roles(*RECIPIENTS))]
Party = Annotated[Caller, Depends(require_roles(*PARTIES))]
Sender = Annotated[Caller, Depends(require_roles(*SENDERS))]
Monitor = Annotated[Caller, Depends(require_roles(*MONITORS))]
Supervisor = Annotated[Caller, Depends(require_roles("supervisor"))]
Auditor = Annotated[Caller, Depends(require_roles(*AUDITORS))]
Admin = Annotated[Caller, Depends(require_roles(*ADMINS))]
AnyCaller = Annotated[Caller, Depends(require_roles(*STAFF_AND_SYSTEMS))]
