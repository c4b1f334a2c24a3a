"""What each agency's connector plugs into the shared machinery: how to read its files, how to hand over."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from connectors.common.bundle import Org
from connectors.common.directory import Directory
from connectors.common.record import Parsed
from connectors.common.runner import Handler, fhir_handler
from connectors.common.status import is_status_file, read_status_updates


@dataclass(frozen=True)
class ReadContext:
    sender: Org
    directory: Directory
    pseudonymise: Callable[[str, str], str]  # (raw id, issuing org) -> pseudonym
    today: date
    config_file: Path | None = None
    outbox: Any = None  # connectors.common.outbox.Outbox: what was handed over (HL7 lookups)


Reader = Callable[[Path, ReadContext], Parsed]


@dataclass(frozen=True)
class AgencyConnector:
    name: str  # the CLI group: hub connector <name> …
    agency_type: str
    default_org: str | None
    help: str
    read_referrals: Reader | None
    handler: Callable[[Path, Org], Handler] = fhir_handler
    acknowledge_on_pull: bool = True
    needs_pseudonyms: bool = True

    def read(self, path: Path, ctx: ReadContext, kind: str = "auto") -> Parsed:
        """Referrals or status updates, by ``kind`` or (auto) by the file's columns."""
        if kind == "status" or (kind == "auto" and (self.read_referrals is None or is_status_file(path))):
            return read_status_updates(path, ctx.sender.id)
        if self.read_referrals is None:
            raise ValueError(f"the {self.name} connector imports status updates only")
        return self.read_referrals(path, ctx)
