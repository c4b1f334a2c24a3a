"""What parsing a native export yields: referral drafts, status changes, bad rows and skipped rows."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be used: where it is (1-based data row, header = row 1) and which field."""

    row: int
    field: str
    reason: str
    record_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "reason": self.reason, "record_id": self.record_id}


@dataclass(frozen=True)
class StatusChange:
    """A lifecycle move of one delivery's Task, as ``POST /v1/tasks/{task_id}/status`` takes it."""

    task_id: str
    status: str
    reason: str | None = None
    business_status: str | None = None
    feedback: str | None = None
    referral_id: str | None = None  # known from HL7 RF1 or a FHIR Task; informative only

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        for key in ("reason", "business_status", "feedback"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out


@dataclass(frozen=True)
class Item:
    """One record to send: a referral Bundle (``draft``) or a status change, with its source rows."""

    record_id: str
    rows: tuple[int, ...]
    draft: Any = None  # connectors.common.bundle.ReferralDraft
    change: StatusChange | None = None

    @property
    def kind(self) -> str:
        return "status" if self.change is not None else "referral"


@dataclass
class Parsed:
    """The result of reading a file: items to send, bad rows (row + field), rows not eligible."""

    rows: int = 0
    items: list[Item] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (not errors)
    held: list[BadRow] = field(default_factory=list)  # eligible, but held back (e.g. no consent)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


def record_id(sender: str, *parts: str) -> str:
    """An opaque, stable id of a source record: the same record always yields the same id.

    ``parts`` must not be raw identifiers of a child (pass the pseudonym, or the agency's own case
    number), so the id can be written to dead-letter files and reports.
    """
    digest = hashlib.sha256("\x1f".join((sender, *parts)).encode("utf-8")).hexdigest()
    return digest[:24]
