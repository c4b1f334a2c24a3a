"""Which connectors exist: CLI name -> module holding its ``CONNECTOR`` (imported only when used)."""

from __future__ import annotations

import importlib

from connectors.common.agency import AgencyConnector

AGENCIES: dict[str, tuple[str, str]] = {
    "school": ("connectors.school.connector", "School screening exports (CSV/XLSX) -> referrals"),
    "hospital": ("connectors.hospital.connector", "Hospital HIS: HL7 v2 (files, MLLP) and FHIR status; pull"),
    "police": ("connectors.police.connector", "Police case exports (JSON/CSV) -> case-support referrals"),
    "civil-affairs": (
        "connectors.civil_affairs.connector",
        "Civil affairs case exports -> welfare referrals",
    ),
    "street-centre": ("connectors.street_centre.connector", "Street/town centre records -> referrals"),
    "hotline": ("connectors.hotline.connector", "知心365 hotline call log -> crisis referrals"),
}


def connector(name: str) -> AgencyConnector:
    module = importlib.import_module(AGENCIES[name][0])
    found: AgencyConnector = module.CONNECTOR
    return found
