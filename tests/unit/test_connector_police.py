"""Police connector: case-system export in -> case-support referral Bundles out (golden)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.common import golden
from connectors.police.connector import CONNECTOR

SAMPLE = Path(__file__).resolve().parents[2] / "connectors" / "police" / "samples" / "cases-2026-11-28.json"


def _basis_and_reasons(record: dict[str, Any]) -> tuple[str, list[str]]:
    request = next(
        e["resource"] for e in record["bundle"]["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )
    basis = next(e["valueCoding"]["code"] for e in request["extension"] if e["url"].endswith("legal-basis"))
    return basis, [c["coding"][0]["code"] for c in request["reasonCode"]]


def test_golden_case_export() -> None:
    document = golden.check(CONNECTOR, SAMPLE, "police-songjiang")
    assert [(b["row"], b["field"]) for b in document["bad_rows"]] == [(5, "身份证号"), (6, "街镇")]
    outcomes = [_basis_and_reasons(r) for r in document["records"]]
    assert outcomes[0] == ("consent", ["case-support"])
    # A victim in a case of harm to a minor: the mandatory report, on the statutory basis.
    assert outcomes[1] == ("statutory", ["case-support", "suspected-abuse-neglect"])
    assert outcomes[3][0] == "statutory"  # no consent: the statutory duty


def test_case_numbers_stay_with_the_agency_and_ids_never_leave() -> None:
    document = golden.check(CONNECTOR, SAMPLE, "police-songjiang")
    task = next(
        e["resource"]
        for e in document["records"][0]["bundle"]["entry"]
        if e["resource"]["resourceType"] == "Task"
    )
    assert task["identifier"][0]["value"] == "SJGA-WCN-2026-0101"
    text = SAMPLE.read_text(encoding="utf-8")
    import json

    raw_ids = [c["涉案未成年人"]["身份证号"] for c in json.loads(text)["cases"]]
    dumped = json.dumps(document, ensure_ascii=False)
    assert not any(raw in dumped for raw in raw_ids)
