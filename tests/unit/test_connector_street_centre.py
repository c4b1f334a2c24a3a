"""Street-centre connector: case records and status updates in -> Bundles / status changes out (golden)."""

from __future__ import annotations

from pathlib import Path

from connectors.common import golden
from connectors.street_centre.connector import CONNECTOR

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "street_centre" / "samples"


def test_golden_case_records() -> None:
    document = golden.check(CONNECTOR, SAMPLES / "cases-yueyang-2026-11.csv", "street-centre-yueyang")
    assert [(b["row"], b["field"]) for b in document["bad_rows"]] == [(5, "转介原因"), (6, "风险等级")]
    crisis = document["records"][1]["bundle"]
    request = next(
        e["resource"] for e in crisis["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )
    assert request["priority"] == "stat"
    assert any(e["url"].endswith("emergency-reason") for e in request["extension"])


def test_golden_status_updates() -> None:
    document = golden.check(CONNECTOR, SAMPLES / "status-2026-11.csv", "street-centre-yueyang")
    assert [r["status"]["status"] for r in document["records"]] == [
        "received",
        "accepted",
        "in-progress",
        "completed",
    ]
    assert document["records"][1]["status"]["business_status"] == "appointment-booked"
    assert document["records"][3]["status"]["feedback"].startswith("已完成6次辅导")
    assert [(b["row"], b["field"]) for b in document["bad_rows"]] == [(6, "原因"), (7, "状态")]
