"""Liveness and readiness: is the broker reachable, is the database reachable."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from hub.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Broker and database reachability")
async def healthz(services: ServicesDep) -> JSONResponse:
    checks = await services.health()
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503
    )
