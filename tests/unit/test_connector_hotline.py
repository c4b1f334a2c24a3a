"""Hotline connector: 知心365 call log in -> crisis-call Bundles out (golden)."""

from __future__ import annotations

from pathlib import Path

from connectors.common import golden
from connectors.hotline.connector import CONNECTOR

SAMPLE = Path(__file__).resolve().parents[2] / "connectors" / "hotline" / "samples" / "calls-2026-11-29.json"


def test_golden_call_log() -> None:
    document = golden.check(CONNECTOR, SAMPLE, "district-centre")
    assert [(b["row"], b["field"]) for b in document["bad_rows"]] == [(5, "性别")]
    assert document["skipped"] == {"not a crisis call (stays with the hotline)": 1}
    risks = []
    for record in document["records"]:
        request = next(
            e["resource"]
            for e in record["bundle"]["entry"]
            if e["resource"]["resourceType"] == "ServiceRequest"
        )
        risk = next(e["valueCoding"]["code"] for e in request["extension"] if e["url"].endswith("risk-level"))
        basis = next(
            e["valueCoding"]["code"] for e in request["extension"] if e["url"].endswith("legal-basis")
        )
        risks.append((risk, basis, request["reasonCode"][0]["coding"][0]["code"]))
    assert risks == [
        ("4", "emergency", "crisis-call"),
        ("4", "emergency", "crisis-call"),
        ("3", "consent", "self-harm"),
    ]


def test_anonymous_caller_gets_a_pseudonym_from_the_call_number() -> None:
    document = golden.check(CONNECTOR, SAMPLE, "district-centre")
    patient = next(
        e["resource"]
        for e in document["records"][0]["bundle"]["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )
    assert patient["identifier"][0]["value"].startswith("psn:")
