"""FastAPI dependencies in one place: the services container and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from hub.domain.error import Unauthenticated
from hub.services.port import Caller
from hub.services.query import Queries
from hub.services.submission import SubmitReferral
from hub.services.task import TransitionTask


@dataclass(frozen=True)
class ApiServices:
    submit: SubmitReferral
    transition: TransitionTask
    queries: Queries
    authenticate: Any  # Callable[[str], Caller | None]
    health: Any  # Callable[[], Awaitable[dict[str, Any]]]


def get_services(request: Request) -> ApiServices:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[ApiServices, Depends(get_services)]


def get_caller(request: Request, services: ServicesDep) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send 'Authorization: Bearer <agency API key>'")
    caller = services.authenticate(token.strip())
    if caller is None:
        raise Unauthenticated("the API key is unknown or disabled")
    return caller  # type: ignore[no-any-return]


CallerDep = Annotated[Caller, Depends(get_caller)]
