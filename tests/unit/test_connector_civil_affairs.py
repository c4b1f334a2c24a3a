"""Civil affairs connector: care-case export in -> welfare follow-up Bundles out (golden)."""

from __future__ import annotations

from pathlib import Path

from connectors.civil_affairs.connector import CONNECTOR
from connectors.common import golden

SAMPLE = Path(__file__).resolve().parents[2] / "connectors" / "civil_affairs" / "samples" / "care-2026-11.csv"


def test_golden_care_export() -> None:
    document = golden.check(CONNECTOR, SAMPLE, "civil-affairs-songjiang")
    assert [(b["row"], b["field"]) for b in document["bad_rows"]] == [(6, "出生日期")]
    assert [(h["row"], h["field"]) for h in document["held"]] == [(5, "监护人同意")]
    assert len(document["records"]) == 3
    first = document["records"][0]["bundle"]
    request = next(e["resource"] for e in first["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    assert [c["coding"][0]["code"] for c in request["reasonCode"]] == ["welfare-follow-up", "family-crisis"]
    note = next(
        e["resource"]
        for e in first["entry"]
        if e["resource"]["resourceType"] == "Observation" and e["resource"]["id"].startswith("note")
    )
    assert note["category"][0]["coding"][0]["code"] == "family"
