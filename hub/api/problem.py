"""RFC 9457 problem details: the one place HubErrors become HTTP answers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from hub.domain.error import HubError, TooManyRequests, Unavailable

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://qixin.example.org/problems/"
MEDIA_TYPE = "application/problem+json"


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, as every error of this API is answered."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[PROBLEM_BASE + "role-forbidden"])
    title: str = Field(examples=["role forbidden"])
    status: int = Field(examples=[403])
    detail: str = Field(examples=["role 'auditor' may not use this endpoint (allowed: district-monitor)"])
    instance: str = Field(examples=["/v1/dashboard/metrics"])
    code: str = Field(description="Stable machine-readable code", examples=["role-forbidden"])
    errors: list[dict[str, Any]] | None = Field(
        default=None,
        description="Per-field problems: JSON path, rule, message",
        examples=[[{"path": "$.status", "rule": "code-unknown", "message": "one of: requested, received"}]],
    )


_DESCRIPTIONS = {
    400: "Malformed request (e.g. a form without its CSRF token)",
    401: "Missing or invalid credentials (API key or session)",
    403: "Authenticated, but this role or agency may not do this",
    404: "Not found, or not visible to the caller's agency",
    409: "Conflicts with the current state (e.g. an invalid lifecycle transition)",
    413: "Body larger than the configured limit",
    422: "Does not match the schema or the Qixin profile",
    429: "Too many requests; see Retry-After",
    501: "Not implemented yet",
    503: "A dependency (broker, database) is unavailable; see Retry-After",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, all as problem+json."""
    return {
        s: {
            "model": ProblemDetails,
            "description": _DESCRIPTIONS.get(s, "Error"),
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        }
        for s in statuses
    }


HtmlError = Callable[[Request, int, str, str], Response]


def wants_html(request: Request) -> bool:
    """Pages (everything but the API, health, metrics, docs and static files) answer errors in HTML."""
    path = request.url.path
    api = ("/v1/", "/healthz", "/metrics", "/openapi.json", "/docs", "/redoc", "/static/")
    return not path.startswith(api)


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


def install(app: FastAPI, html_error: HtmlError | None = None) -> None:
    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        # Throttled (429) or a dependency down (503): when to try again, if the error knows.
        retry_after = exc.retry_after if isinstance(exc, TooManyRequests | Unavailable) else None
        if retry_after is not None:
            headers = {"Retry-After": str(retry_after)}
        if html_error is not None and wants_html(request):
            response = html_error(request, exc.status, exc.code, exc.message)
            if retry_after is not None:
                response.headers["Retry-After"] = str(retry_after)
            return response
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
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
            exc.status_code, "http-error"
        )
        if html_error is not None and wants_html(request):
            return html_error(request, exc.status_code, code, str(exc.detail))
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
