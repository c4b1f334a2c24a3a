"""Police case exports (JSON from the case system, or CSV) -> case-support referrals; status updates back.

Every record is a minor in a case (victim, witness or suspect). The reason is always case-support;
a victim of abuse or neglect (角色 被害人 in a case of harm to a minor) adds suspected-abuse-neglect.
Legal basis: the guardian's consent when given, otherwise the statutory duty (the district's legal
staff confirm it for each pathway; the routing rules name the basis per route).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.common.agency import AgencyConnector, ReadContext
from connectors.common.case import CaseProfile, read_cases
from connectors.common.record import Parsed
from connectors.common.value import text


def _extra(values: Mapping[str, Any]) -> set[str]:
    role, category = text(values.get("role")), text(values.get("category"))
    if role in ("被害人", "受害人", "victim") and any(
        k in category for k in ("侵害", "虐待", "忽视", "abuse")
    ):
        return {"suspected-abuse-neglect"}
    return set()


PROFILE = CaseProfile(
    agency_type="police",
    base_reasons=("case-support",),
    default_risk=2,
    note_category="case",
    note_title="案件情况",
    consent_recipients=("district-centre", "street-centre"),
    consent_purposes=("safeguarding", "follow-up", "treatment"),
    consent_categories=("identity", "demographics", "contact", "risk", "case"),
    basis=lambda values, reasons, risk, consented: (
        ("emergency", text(values.get("action")) or "涉案未成年人存在紧迫风险")
        if risk == 4
        else ("consent", None)
        if consented
        else ("statutory", None)
    ),
    extra_reasons=_extra,
)


def read(path: Path, ctx: ReadContext) -> Parsed:
    return read_cases(path, ctx, PROFILE)


CONNECTOR = AgencyConnector(
    name="police",
    agency_type="police",
    default_org="police-songjiang",
    help="Police case exports (JSON/CSV) -> case-support referrals; status updates back.",
    read_referrals=read,
)
