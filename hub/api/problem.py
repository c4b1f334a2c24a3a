"""RFC 9457 problem details: the one place HubErrors become HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.domain.error import HubError

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://qixin.example.org/problems/"
MEDIA_TYPE = "application/problem+json"


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return problem(
            exc.status,
            exc.code,
            exc.code.replace("-", " "),
            exc.message,
            request.url.path,
            exc.details,
            headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "path": "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"][1:]),
                "rule": err["type"],
                "message": err["msg"],
            }
            for err in exc.errors()
        ]
        return problem(
            422,
            "request-invalid",
            "request invalid",
            "the request does not match the API schema",
            request.url.path,
            errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
            exc.status_code, "http-error"
        )
        return problem(exc.status_code, code, code.replace("-", " "), str(exc.detail), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the type only: exception messages can carry request data.
        log.error("unexpected error", extra={"path": request.url.path, "error": type(exc).__name__})
        return problem(
            500,
            "internal-error",
            "internal error",
            "an unexpected error occurred; it was logged",
            request.url.path,
        )
