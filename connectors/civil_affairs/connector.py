"""Civil affairs exports (CSV/XLSX or JSON of 关爱对象) -> welfare follow-up referrals to the town centres.

The reason is welfare-follow-up; 儿童类别 事实无人抚养 / 困境 / 留守 or a 家庭情况 note adds family-crisis
when the family situation is acute. Follow-up rests on the guardian's consent: without it the record
is held (listed in the report), never sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.common.agency import AgencyConnector, ReadContext
from connectors.common.case import CaseProfile, read_cases
from connectors.common.record import Parsed
from connectors.common.value import text

_ACUTE = ("事实无人抚养", "监护缺失", "家庭暴力", "父母双亡")


def _extra(values: Mapping[str, Any]) -> set[str]:
    words = text(values.get("category")) + text(values.get("summary"))
    return {"family-crisis"} if any(k in words for k in _ACUTE) else set()


PROFILE = CaseProfile(
    agency_type="civil-affairs",
    base_reasons=("welfare-follow-up",),
    default_risk=1,
    note_category="family",
    note_title="家庭情况",
    consent_recipients=("street-centre",),
    consent_purposes=("follow-up", "safeguarding"),
    consent_categories=("identity", "demographics", "contact", "family", "risk"),
    extra_reasons=_extra,
)


def read(path: Path, ctx: ReadContext) -> Parsed:
    return read_cases(path, ctx, PROFILE)


CONNECTOR = AgencyConnector(
    name="civil-affairs",
    agency_type="civil-affairs",
    default_org="civil-affairs-songjiang",
    help="Civil affairs case exports -> welfare follow-up referrals; status updates back.",
    read_referrals=read,
)
