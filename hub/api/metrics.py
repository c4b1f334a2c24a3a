"""API metrics (Prometheus) at /metrics: requests by route template and status, submission outcomes.

Route templates (``/v1/tasks/{task_id}/status``), never concrete paths, so no ids reach the labels.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("qixin_api_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "qixin_api_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class RequestMetrics:
    """Counts and times each HTTP request by route template and status.

    Plain ASGI rather than ``BaseHTTPMiddleware``, which runs every request in a task group with a
    memory stream for the body: a measurable share of the API's CPU per request (bench/README.md).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            # The outermost error handler answers 500 for what escapes the app.
            _observe(scope, status or 500, start)
            raise
        _observe(scope, status, start)


def _observe(scope: Scope, status: int, start: float) -> None:
    # The router puts the matched route into the scope; nothing matched: "unmatched".
    template = getattr(scope.get("route"), "path", "unmatched")
    method = scope["method"]
    REQUESTS.labels(method, template, str(status)).inc()
    LATENCY.labels(method, template).observe(time.perf_counter() - start)


def install(app: FastAPI) -> None:
    app.add_middleware(RequestMetrics)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
