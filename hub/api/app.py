"""FastAPI application factory; the services container is injected by bootstrap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from hub import __version__
from hub.api import metrics, pages, problem
from hub.api.bodylimit import BodyLimit
from hub.api.deps import AUDITORS, ApiServices, require_roles
from hub.api.problem import problem_responses
from hub.api.routes import (
    audit,
    auth,
    breakglass,
    dashboard,
    directory,
    followup,
    health,
    referral,
    task,
    user,
)


def create_app(
    services: ApiServices,
    *,
    max_body_bytes: int,
    on_startup: Callable[[], Awaitable[None]] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if on_startup:
            await on_startup()
        try:
            yield
        finally:
            if on_shutdown:
                await on_shutdown()

    app = FastAPI(
        title="Qixin referral hub API",
        version=__version__,
        description="Consent-scoped referrals between schools, CAMHS, police, civil affairs and guidance "
        "centres. Errors are RFC 9457 problem details.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.audit = services.audit  # the audit routes read it from here
    problem.install(app, html_error=pages.html_error)
    metrics.install(app)
    # Added last, so outermost: a body over the limit is refused before anything else runs.
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes)

    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(referral.router)
    app.include_router(task.router)
    app.include_router(followup.router, responses=problem_responses(401, 403, 404, 409, 422))
    app.include_router(directory.router)
    app.include_router(dashboard.router)
    app.include_router(user.router)
    app.include_router(breakglass.router)
    # Only auditors search and verify the trail; it holds ids and codes, never clinical content.
    app.include_router(
        audit.router, dependencies=[Depends(require_roles(*AUDITORS))], responses=problem_responses(401, 403)
    )
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.HERE / "static"), name="static")
    return app
