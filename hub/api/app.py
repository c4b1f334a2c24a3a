"""FastAPI application factory; the services container is injected by bootstrap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from hub import __version__
from hub.api import problem
from hub.api.deps import ApiServices
from hub.api.routes import health, referral, task


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
    problem.install(app)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_body_bytes:
            return problem.problem(
                413,
                "payload-too-large",
                "payload too large",
                f"the body is {length} bytes; the limit is {max_body_bytes}",
                request.url.path,
            )
        return await call_next(request)

    app.include_router(health.router)
    app.include_router(referral.router)
    app.include_router(task.router)
    return app
