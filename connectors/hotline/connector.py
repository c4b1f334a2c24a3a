"""The 知心365 hotline call log (JSON or CSV) -> crisis-call referrals.

A call is referred when it is a crisis (是否危机 = 是, or 风险等级 4): reason crisis-call, risk 4, the
emergency basis with the operator's 处置 (or the call summary) as its reason. Other calls are referred
only at risk 3 with the caller's consent; the rest stay with the hotline. Callers rarely give an ID
number: the pseudonym then derives from the call number (unlinkable to other agencies' records).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.common.agency import AgencyConnector, ReadContext
from connectors.common.case import CaseProfile, read_cases, risk_of
from connectors.common.record import Parsed
from connectors.common.value import ValueProblem, text, yes_no


def _crisis(values: Mapping[str, Any]) -> bool:
    try:
        return yes_no(values.get("crisis")) or risk_of(values.get("risk"), 0) == 4
    except ValueProblem:
        return False


def _eligible(values: Mapping[str, Any], reasons: set[str], risk: int) -> str | None:
    if _crisis(values) or risk >= 3:
        return None
    return "not a crisis call (stays with the hotline)"


PROFILE = CaseProfile(
    agency_type="district-centre",
    base_reasons=(),
    default_risk=2,
    note_category="risk",
    note_title="来电情况",
    consent_recipients=("camhs", "street-centre"),
    consent_purposes=("treatment", "crisis-intervention", "follow-up"),
    consent_categories=("identity", "demographics", "contact", "risk"),
    required=("case_no", "gender", "birth", "town"),
    json_keys=("calls", "records", "items"),
    id_optional=True,
    extra_reasons=lambda values: {"crisis-call"} if _crisis(values) else set(),
    eligible=_eligible,
    basis=lambda values, reasons, risk, consented: (
        ("emergency", text(values.get("action")) or text(values.get("summary")) or "热线危机来电")
        if "crisis-call" in reasons or risk == 4
        else ("consent", None)
        if consented
        else (None, None)
    ),
)


def read(path: Path, ctx: ReadContext) -> Parsed:
    return read_cases(path, ctx, PROFILE)


CONNECTOR = AgencyConnector(
    name="hotline",
    agency_type="district-centre",
    default_org="district-centre",
    help="知心365 hotline call log -> crisis referrals; status updates back.",
    read_referrals=read,
)
