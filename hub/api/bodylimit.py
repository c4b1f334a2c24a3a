"""Request size limit: 413 problem details for a body over ``max_body_bytes``."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api import problem


class BodyLimit:
    """Refuses a declared Content-Length over the limit before the app runs (413 problem details),
    and a body without one (chunked) as soon as the bytes read pass the limit.

    Plain ASGI rather than ``BaseHTTPMiddleware`` (a task group and a memory stream per request).
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is None:
            await self.app(scope, self._counting(receive), send)
            return
        if length.isdigit() and int(length) > self.max_body_bytes:
            response = problem.problem(
                413,
                "payload-too-large",
                "payload too large",
                f"the body is {length} bytes; the limit is {self.max_body_bytes}",
                Request(scope).url.path,
            )
            await response(scope, receive, send)
            return
        # A declared length within the limit: the server holds the client to it.
        await self.app(scope, receive, send)

    def _counting(self, receive: Receive) -> Receive:
        limit, seen = self.max_body_bytes, 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Raised where the app reads the body; the exception handlers answer 413.
                    raise HTTPException(413, f"the body is over the limit of {limit} bytes")
            return message

        return counted


def _content_length(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.decode("latin-1")
    return None
