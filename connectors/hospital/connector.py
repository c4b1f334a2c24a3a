"""The hospital connector: HL7 v2 and FHIR status files in, deliveries handed to the HIS as REF^I12 + FHIR."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.common.agency import AgencyConnector, ReadContext
from connectors.common.bundle import Org
from connectors.common.record import BadRow, Item, Parsed, StatusChange, record_id
from connectors.common.runner import Handler, pseudonym_of, write_atomic
from connectors.common.status import read_status_updates
from connectors.common.table import TableError
from connectors.hospital.hl7v2 import Lookup, TaskRef, build_ref, control_id_for, map_message, split_messages
from schemas.profile import FeedbackMessage, ProfileError, StatusUpdate, validate_message

HL7_SUFFIXES = (".hl7", ".er7", ".txt", ".mllp")


def outbox_lookup(outbox: Any) -> Lookup:
    """Find the delivery an HIS message is about in what this connector handed over."""

    def lookup(kind: str, value: str) -> TaskRef | None:
        if not value:
            return None
        if kind == "task-id":
            handed = outbox.handed(value) if outbox is not None else None
            # A task the HIS learnt of another way still goes to the hub, which checks it is ours.
            return TaskRef(value, handed.referral_id if handed else None)
        if outbox is None:
            return None
        if kind == "control-id":
            found = outbox.handed_by_control_id(value)
            return TaskRef(found.task_id, found.referral_id) if found else None
        if kind == "pseudonym":
            matches = outbox.handed_by_pseudonym(value)
            return TaskRef(matches[0].task_id, matches[0].referral_id) if matches else None
        return None

    return lookup


def read_hl7(text: str, agency: str, lookup: Lookup) -> Parsed:
    parsed = Parsed()
    for number, raw in enumerate(split_messages(text), start=1):
        parsed.rows += 1
        mapped = map_message(raw, lookup, number)
        if mapped.bad is not None:
            parsed.bad.append(mapped.bad)
        elif mapped.ignored is not None:
            parsed.skip(mapped.ignored)
        elif mapped.change is not None:
            rid = record_id(agency, "hl7", mapped.control_id)
            parsed.items.append(Item(rid, (number,), change=mapped.change))
    return parsed


def _task(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(
        (
            e["resource"]
            for e in bundle.get("entry") or []
            if isinstance(e, dict) and (e.get("resource") or {}).get("resourceType") == "Task"
        ),
        {},
    )


def read_fhir(path: Path, agency: str) -> Parsed:
    """referral-status / referral-feedback message Bundles (one, or a JSON list of them) from the HIS."""
    document = json.loads(path.read_text(encoding="utf-8"))
    bundles = document if isinstance(document, list) else [document]
    parsed = Parsed()
    for number, bundle in enumerate(bundles, start=1):
        parsed.rows += 1
        try:
            message = validate_message(bundle)
        except ProfileError as exc:
            for issue in exc.issues[:5]:
                parsed.bad.append(BadRow(number, issue.path, f"{issue.rule}: {issue.message}"))
            continue
        if message.sender_org != agency:
            parsed.bad.append(
                BadRow(number, "MessageHeader.sender", f"sent by {message.sender_org}, not {agency}")
            )
            continue
        if isinstance(message, StatusUpdate):
            change = StatusChange(
                message.task_id,
                message.status,
                message.reason,
                message.business_status,
                None,
                message.referral_id,
            )
        elif isinstance(message, FeedbackMessage):
            task = _task(bundle)
            texts = [
                str(p.get("contentString"))
                for e in bundle.get("entry") or []
                if (e.get("resource") or {}).get("resourceType") == "Communication"
                for p in e["resource"].get("payload") or []
                if p.get("contentString")
            ]
            if not task.get("id"):
                parsed.bad.append(
                    BadRow(number, "Task.id", "feedback needs the Task (the hub's task id) it closes")
                )
                continue
            change = StatusChange(
                str(task["id"]),
                message.task_status or "completed",
                None,
                "feedback-sent",
                "\n".join(texts),
                message.referral_id,
            )
        else:
            parsed.skip(f"{message.event} messages carry no status")
            continue
        parsed.items.append(Item(record_id(agency, "fhir", message.message_id), (number,), change=change))
    return parsed


def read(path: Path, ctx: ReadContext) -> Parsed:
    suffix = path.suffix.lower()
    if suffix in HL7_SUFFIXES:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("gb18030")
        return read_hl7(text, ctx.sender.id, outbox_lookup(ctx.outbox))
    if suffix == ".json":
        try:
            return read_fhir(path, ctx.sender.id)
        except json.JSONDecodeError as exc:
            raise TableError(f"{path.name} is not JSON: {exc}") from None
    return read_status_updates(path, ctx.sender.id)


def his_handler(directory: Path, hospital: Org | None = None) -> Handler:
    """Write ``<task id>.hl7`` (REF^I12) and ``<task id>.json`` (FHIR) into the HIS's inbound folder."""

    def handle(item: dict[str, Any], opened: dict[str, Any]) -> tuple[list[str], str | None, str | None]:
        content = opened.get("content")
        ref = build_ref(item, content, hospital or Org("hospital", "camhs"), datetime.now(UTC))
        hl7_path = directory / f"{item['task_id']}.hl7"
        json_path = directory / f"{item['task_id']}.json"
        write_atomic(
            json_path,
            json.dumps({"delivery": item, "content": content}, ensure_ascii=False, indent=2).encode(),
        )
        write_atomic(hl7_path, ref.encode("utf-8"))
        return [hl7_path.name, json_path.name], control_id_for(str(item["task_id"])), pseudonym_of(content)

    return handle


def _read_any(path: Path, ctx: ReadContext) -> Parsed:
    return read(path, ctx)


class _HospitalConnector(AgencyConnector):
    def read(self, path: Path, ctx: ReadContext, kind: str = "auto") -> Parsed:
        return read(path, ctx)


CONNECTOR = _HospitalConnector(
    name="hospital",
    agency_type="camhs",
    default_org=None,
    help="Hospital HIS: HL7 v2 RRI/ACK/ADT and FHIR status in; REF^I12 + FHIR out.",
    read_referrals=_read_any,
    handler=his_handler,
    acknowledge_on_pull=False,  # the HIS's ACK to our REF^I12 is the acknowledgement
    needs_pseudonyms=False,
)
