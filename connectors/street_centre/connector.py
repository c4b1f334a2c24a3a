"""Street/town guidance centre records (CSV/XLSX/JSON) -> referrals onwards; status updates back.

The centre refers what it cannot hold itself: 转介原因 lists the reasons (codes or Chinese names),
风险等级 the risk. Consent covers CAMHS and the district centre for treatment, crisis intervention and
follow-up; a crisis (4) goes on the emergency basis with the 处置 text as its reason; without consent
anything else is held.
"""

from __future__ import annotations

from pathlib import Path

from connectors.common.agency import AgencyConnector, ReadContext
from connectors.common.case import CaseProfile, read_cases
from connectors.common.record import Parsed
from connectors.common.value import text

PROFILE = CaseProfile(
    agency_type="street-centre",
    base_reasons=(),
    default_risk=2,
    note_category="risk",
    note_title="个案情况",
    consent_recipients=("camhs", "district-centre"),
    consent_purposes=("treatment", "crisis-intervention", "follow-up"),
    consent_categories=("identity", "demographics", "contact", "risk", "family"),
    basis=lambda values, reasons, risk, consented: (
        ("consent", None)
        if consented
        else ("emergency", text(values.get("action")) or "街镇中心评估为危机，需紧急干预")
        if risk == 4
        else (None, None)
    ),
)


def read(path: Path, ctx: ReadContext) -> Parsed:
    return read_cases(path, ctx, PROFILE)


CONNECTOR = AgencyConnector(
    name="street-centre",
    agency_type="street-centre",
    default_org=None,
    help="Street/town centre case records -> referrals onwards; status updates back.",
    read_referrals=read,
)
