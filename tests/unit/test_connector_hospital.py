"""Hospital connector: HL7 v2 / FHIR in -> status changes out (golden); REF^I12 out; MLLP ACKs."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.common import golden
from connectors.common.bundle import Org
from connectors.common.outbox import Handed, Outbox
from connectors.common.record import StatusChange
from connectors.common.runner import Context
from connectors.common.settings import ConnectorSettings
from connectors.common.transport import Outcome
from connectors.hospital.connector import CONNECTOR
from connectors.hospital.hl7v2 import build_ref, control_id_for, map_message
from connectors.hospital.mllp import serve

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "hospital" / "samples"
CAMHS = "camhs-songjiang-mhc"


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    box = Outbox(tmp_path / "camhs.outbox.sqlite")
    for h in json.loads((SAMPLES / "handed.json").read_text()):
        box.record_handed(
            Handed(
                h["task_id"],
                h["referral_id"],
                None,
                h["sender_org"],
                h["pseudonym"],
                h["control_id"],
                datetime.now(UTC),
            ),
            [],
        )
    return box


def test_golden_hl7_responses(outbox: Outbox) -> None:
    document = golden.check(CONNECTOR, SAMPLES / "his-responses.hl7", CAMHS, outbox)
    changes = [(r["rows"][0], r["status"]) for r in document["records"]]
    assert changes == [
        (1, {"status": "received"}),
        (2, {"status": "accepted", "business_status": "appointment-booked"}),
        (3, {"status": "in-progress"}),
        (
            4,
            {
                "status": "completed",
                "business_status": "feedback-sent",
                "feedback": changes[3][1]["feedback"],
            },
        ),
        (5, {"status": "rejected", "reason": "本院今日无儿童精神科值班医生，请转区中心医院。"}),
    ]
    assert changes[3][1]["feedback"].startswith("已于12月2日首诊")
    assert document["skipped"] == {"ADT^A08 messages carry no referral status": 1}
    assert [(b["row"], b["field"]) for b in document["bad_rows"]] == [
        (7, "RF1-1"),
        (8, "MSA-2"),
        (9, "NTE-3"),
    ]


def test_golden_fhir_status_and_feedback() -> None:
    document = golden.check(CONNECTOR, SAMPLES / "his-fhir-status.json", CAMHS)
    assert [r["status"]["status"] for r in document["records"]] == ["accepted", "completed"]
    assert document["bad_rows"][0]["row"] == 3  # rejected without a reason breaks the profile


def test_ref_i12_for_a_delivery_matches_golden() -> None:
    sample = json.loads((SAMPLES / "delivery.json").read_text(encoding="utf-8"))
    at = datetime(2026, 11, 30, 9, 20, tzinfo=golden.SHANGHAI)
    text = build_ref(sample["delivery"], sample["content"], Org(CAMHS, "camhs"), at)
    golden_file = SAMPLES / "golden" / "delivery.hl7"
    if os.environ.get("QIXIN_UPDATE_GOLDEN") == "1":
        golden_file.write_bytes(text.encode("utf-8"))
    assert text == golden_file.read_bytes().decode("utf-8")  # bytes: segments end in CR
    segments = {line.split("|")[0]: line.split("|") for line in text.split("\r") if line}
    assert segments["MSH"][9] == control_id_for("task-5b7f0e2c1d9a4e6f8b3c2a1d")
    assert segments["RF1"][6].startswith("task-5b7f0e2c1d9a4e6f8b3c2a1d^QIXIN")
    assert segments["PID"][3].endswith("^^^QIXIN^PN")


def test_hl7_reply_answering_our_ref_round_trips_through_the_mapping() -> None:
    sample = json.loads((SAMPLES / "delivery.json").read_text(encoding="utf-8"))
    ref = build_ref(sample["delivery"], sample["content"], Org(CAMHS, "camhs"), datetime.now(UTC))
    import hl7

    ack = str(hl7.parse(ref).create_ack("AA", application="HIS", facility="SJMHC"))
    task = sample["delivery"]["task_id"]

    def lookup(kind: str, value: str):  # type: ignore[no-untyped-def]
        from connectors.hospital.hl7v2 import TaskRef

        return TaskRef(task, sample["delivery"]["referral_id"]) if value == control_id_for(task) else None

    mapped = map_message(ack, lookup)
    assert mapped.change == StatusChange(task, "received", referral_id=sample["delivery"]["referral_id"])


class _FakeHub:
    """Stands in for HttpsTransport: records status changes; the first call can fail temporarily."""

    def __init__(self, outcome: Outcome | None = None) -> None:
        self.changes: list[StatusChange] = []
        self._outcome = outcome

    def change_status(self, change: StatusChange) -> Outcome:
        self.changes.append(change)
        return self._outcome or Outcome(True, referral_id="ref-x")


async def _exchange(ctx: Context, messages: list[str]) -> list[str]:
    from hl7.mllp import open_hl7_connection

    started, stop = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(serve(ctx, "127.0.0.1", 0, started=started, stop=stop))
    await asyncio.wait_for(started.wait(), 10)
    replies: list[str] = []
    reader, writer = await open_hl7_connection("127.0.0.1", _bound_port(), encoding="utf-8")
    for raw in messages:
        writer.writeblock(raw.encode("utf-8"))
        await writer.drain()
        replies.append((await reader.readblock()).decode("utf-8"))
    writer.close()
    stop.set()
    await server
    return replies


def _bound_port() -> int:
    import connectors.hospital.mllp as mllp

    return int(mllp.LAST_PORT)


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (None, "AA"),
        (Outcome(False, status=409, code="invalid-transition", detail="no"), "AE"),
        (Outcome(False, code="ConnectError", detail="down", exhausted=True), "AR"),
    ],
)
def test_mllp_listener_forwards_and_acks(
    tmp_path: Path, outbox: Outbox, outcome: Outcome | None, code: str
) -> None:
    settings = ConnectorSettings(agency=CAMHS, state_dir=tmp_path)
    hub = _FakeHub(outcome)
    ctx = Context(settings, Org(CAMHS, "camhs"), outbox, https=hub)  # type: ignore[arg-type]
    raw = (SAMPLES / "his-responses.hl7").read_text(encoding="utf-8").split("\nMSH")[0].replace("\n", "\r")
    [reply] = asyncio.run(_exchange(ctx, [raw]))
    assert f"MSA|{code}|SJMHC00001" in reply
    assert [c.status for c in hub.changes] == ["received"]


def test_mllp_resent_message_is_not_applied_twice(tmp_path: Path, outbox: Outbox) -> None:
    settings = ConnectorSettings(agency=CAMHS, state_dir=tmp_path)
    hub = _FakeHub()
    ctx = Context(settings, Org(CAMHS, "camhs"), outbox, https=hub)  # type: ignore[arg-type]
    raw = (SAMPLES / "his-responses.hl7").read_text(encoding="utf-8").split("\nMSH")[0].replace("\n", "\r")
    replies = asyncio.run(_exchange(ctx, [raw, raw]))
    assert all("MSA|AA|SJMHC00001" in r for r in replies)
    assert len(hub.changes) == 1
