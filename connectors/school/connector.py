"""The school connector as the CLI and the runner see it."""

from __future__ import annotations

from connectors.common.agency import AgencyConnector
from connectors.school.screening import read

CONNECTOR = AgencyConnector(
    name="school",
    agency_type="school",
    default_org=None,
    help="School screening platform: CSV/XLSX screening exports -> referrals; status updates back.",
    read_referrals=read,
)
