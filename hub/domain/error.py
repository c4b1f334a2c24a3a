"""The one HubError family: stable codes, mapped once at the edge (HTTP problem, dead letter)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class HubError(Exception):
    """Base of every error the hub raises on purpose.

    ``code`` is stable (clients and dead letters key on it); ``status`` is the HTTP status the API edge
    uses; ``details`` must never carry PII because it is logged and put on dead-letter records.
    """

    message: str
    code: str = "hub-error"
    status: int = 500
    details: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidInput(HubError):
    def __init__(
        self, message: str, details: list[dict[str, Any]] | None = None, code: str = "invalid-input"
    ) -> None:
        super().__init__(message=message, code=code, status=422, details=details or [])


class NotFound(HubError):
    def __init__(self, message: str, code: str = "not-found") -> None:
        super().__init__(message=message, code=code, status=404)


class Conflict(HubError):
    def __init__(
        self, message: str, code: str = "conflict", details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message=message, code=code, status=409, details=details or [])


class Forbidden(HubError):
    def __init__(self, message: str, code: str = "forbidden") -> None:
        super().__init__(message=message, code=code, status=403)


class Unauthenticated(HubError):
    def __init__(
        self, message: str = "missing or invalid credentials", code: str = "unauthenticated"
    ) -> None:
        super().__init__(message=message, code=code, status=401)


class Unavailable(HubError):
    """A dependency (broker, database) is down; ``retry_after`` seconds, when given, go out as Retry-After."""

    def __init__(self, message: str, code: str = "unavailable", retry_after: int | None = None) -> None:
        super().__init__(message=message, code=code, status=503)
        self.retry_after = None if retry_after is None else max(1, int(retry_after))


class TooManyRequests(HubError):
    """Throttled (login failures, submission rate); ``retry_after`` seconds go out as Retry-After."""

    def __init__(self, message: str, retry_after: int, code: str = "too-many-requests") -> None:
        super().__init__(message=message, code=code, status=429)
        self.retry_after = max(1, int(retry_after))


class BadRequest(HubError):
    """The request contradicts itself (e.g. a time range that ends before it starts)."""

    def __init__(self, message: str, code: str = "bad-request") -> None:
        super().__init__(message=message, code=code, status=400)
