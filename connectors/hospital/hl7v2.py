"""HL7 v2.5 through python-hl7: REF^I12 for the HIS, and RRI^I12 / ACK / ADT from it mapped to status changes.

Mapping (documented in connectors/hospital/README.md):

==========================  ==========================================  =============================
HIS message                 condition                                   hub status
==========================  ==========================================  =============================
ACK (to our REF^I12)        MSA-1 AA or CA                              received
RRI^I12                     RF1-1 P (pending)                           received
RRI^I12                     RF1-1 A (accepted)                          accepted (+ appointment-booked
                                                                        when RF1-7 gives the date)
RRI^I12                     RF1-1 R (rejected)                          rejected, reason RF1-10 / NTE
RRI^I12                     RF1-1 E (expired)                           cancelled, reason "expired"
ADT^A04 (outpatient visit)  patient PID-3 carries the QIXIN pseudonym   in-progress (first contact)
ADT^A03 (visit ended)       NTE or OBX text = the feedback              completed with feedback
==========================  ==========================================  =============================

The referral is found through RF1-6 (originating referral id = the hub's task id, which our REF^I12
carries), MSA-2 (the control id of our REF^I12) or, for ADT, the pseudonym in PID-3 (assigning
authority QIXIN) of a delivery handed to the HIS.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import hl7

from connectors.common.bundle import Org
from connectors.common.record import BadRow, StatusChange
from schemas.canonical import CS_REASON, CS_RISK, NS_PSEUDONYM, SD_RISK
from schemas.scoring import SPEC_BY_CODE

QIXIN = "QIXIN"
_PRIORITY = {"stat": "S", "asap": "A", "urgent": "A", "routine": "R"}
_GENDER = {"male": "M", "female": "F", "other": "O", "unknown": "U"}


@dataclass(frozen=True)
class TaskRef:
    task_id: str
    referral_id: str | None = None


# (kind, value) -> the referral it belongs to; kind is "control-id" or "pseudonym"
Lookup = Callable[[str, str], TaskRef | None]


@dataclass(frozen=True)
class Mapped:
    """What one HIS message means: a change, nothing to do (``ignored``), or a problem."""

    control_id: str
    message_type: str
    change: StatusChange | None = None
    bad: BadRow | None = None
    ignored: str | None = None


def escape(value: str) -> str:
    """HL7 escape sequences for the delimiters inside a value (\\E\\ first)."""
    out = value.replace("\\", "\\E\\")
    for char, seq in (("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        out = out.replace(char, seq)
    return re.sub(r"[\r\n]+", " ", out)


def split_messages(text: str) -> list[str]:
    """Messages of a file: MLLP-framed blocks, or segments from each MSH to the next."""
    text = text.replace("\x0b", "\n").replace("\x1c", "\n")
    lines = [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()]
    messages: list[list[str]] = []
    for line in lines:
        if line.startswith("MSH") or not messages:
            messages.append([])
        messages[-1].append(line)
    return ["\r".join(m) for m in messages]


def _get(message: Any, segment: str, field: int, component: int = 1, repeat: int = 1) -> str:
    try:
        value = message.extract_field(segment, 1, field, repeat, component)
    except (KeyError, IndexError):
        return ""
    return message.unescape(str(value)) if value else ""


def _texts(message: Any) -> list[str]:
    out: list[str] = []
    for seg_id in ("NTE", "OBX"):
        try:
            segments = message.segments(seg_id)
        except KeyError:
            continue
        for seg in segments:
            index = 3 if seg_id == "NTE" else 5
            value = str(seg[index]) if len(seg) > index else ""
            if value:
                out.append(message.unescape(value))
    return out


def _pseudonym(message: Any) -> str | None:
    try:
        pid = message.segment("PID")
    except KeyError:
        return None
    if len(pid) <= 3:
        return None
    for rep in pid[3]:
        parts = [str(p) for p in rep] if isinstance(rep, list) else [str(rep)]
        if len(parts) > 3 and parts[3] == QIXIN and parts[0]:
            return parts[0]
    return None


def map_message(raw: str, lookup: Lookup, row: int = 1) -> Mapped:
    """Map one HL7 v2 message from the HIS to a status change of the hub's Task."""
    try:
        message = hl7.parse(raw)
        kind = _get(message, "MSH", 9, 1)
        event = _get(message, "MSH", 9, 2)
        control = _get(message, "MSH", 10)
    except (ValueError, KeyError, IndexError) as exc:
        return Mapped("", "", bad=BadRow(row, "MSH", f"not an HL7 v2 message: {exc}"))
    mtype = f"{kind}^{event}" if event else kind

    def bad(field: str, reason: str) -> Mapped:
        return Mapped(control, mtype, bad=BadRow(row, field, reason))

    if not control:
        return bad("MSH-10", "the message control id is empty")
    if kind == "ACK":
        code = _get(message, "MSA", 1)
        ref = lookup("control-id", _get(message, "MSA", 2))
        if ref is None:
            return bad("MSA-2", "acknowledges a message this connector did not send")
        if code in ("AA", "CA"):
            return Mapped(
                control, mtype, change=StatusChange(ref.task_id, "received", referral_id=ref.referral_id)
            )
        return bad(
            "MSA-1", f"the HIS refused the referral ({code}): {_get(message, 'MSA', 3) or 'no reason given'}"
        )
    if kind == "RRI" and event == "I12":
        task_id = _get(message, "RF1", 6, 1) or _get(message, "RF1", 11, 1)
        ref = lookup("task-id", task_id) if task_id else lookup("control-id", _get(message, "MSA", 2))
        if ref is None:
            return bad("RF1-6", "names no referral this connector handed to the HIS")
        status = _get(message, "RF1", 1, 1).upper()
        if status == "P":
            change = StatusChange(ref.task_id, "received", referral_id=ref.referral_id)
        elif status == "A":
            booked = "appointment-booked" if _get(message, "RF1", 7) else None
            change = StatusChange(
                ref.task_id, "accepted", business_status=booked, referral_id=ref.referral_id
            )
        elif status == "R":
            reason = _get(message, "RF1", 10, 2) or _get(message, "RF1", 10, 1) or " ".join(_texts(message))
            if not reason:
                return bad("RF1-10", "a rejection needs its reason (RF1-10 or NTE)")
            change = StatusChange(ref.task_id, "rejected", reason=reason, referral_id=ref.referral_id)
        elif status == "E":
            change = StatusChange(
                ref.task_id, "cancelled", reason="referral expired at the HIS", referral_id=ref.referral_id
            )
        else:
            return bad("RF1-1", f"referral status {status!r} is not A, P, R or E (HL7 table 0283)")
        return Mapped(control, mtype, change=change)
    if kind == "ADT" and event in ("A04", "A03"):
        pseudonym = _pseudonym(message)
        if pseudonym is None:
            return bad(
                "PID-3", "no identifier with assigning authority QIXIN (the pseudonym from our REF^I12)"
            )
        ref = lookup("pseudonym", pseudonym)
        if ref is None:
            return bad("PID-3", "no referral handed to the HIS for this patient")
        if event == "A04":
            return Mapped(
                control, mtype, change=StatusChange(ref.task_id, "in-progress", referral_id=ref.referral_id)
            )
        feedback = "\n".join(_texts(message)).strip()
        if not feedback:
            return bad("NTE-3", "closing a referral needs the feedback to the referrer (NTE or OBX text)")
        return Mapped(
            control,
            mtype,
            change=StatusChange(
                ref.task_id,
                "completed",
                business_status="feedback-sent",
                feedback=feedback,
                referral_id=ref.referral_id,
            ),
        )
    return Mapped(control, mtype, ignored=f"{mtype or 'unknown'} messages carry no referral status")


def ack(raw: str, code: str, text: str, facility: str) -> str:
    """The original-mode ACK to a HIS message: AA done, AE content error, AR not processed (retry)."""
    message = hl7.parse(raw)
    reply = str(message.create_ack(ack_code=code, application=QIXIN, facility=facility))
    if not text:
        return reply
    # MSA-3 (text message) carries why, for the HIS operator.
    return "\r".join(
        f"{seg}|{escape(text)[:80]}" if seg.startswith("MSA|") else seg for seg in reply.split("\r")
    )


# --------------------------------------------------------------------------------------------------
# REF^I12: a delivery handed to the HIS


def _resources(bundle: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    for entry in (bundle or {}).get("entry") or []:
        resource = entry.get("resource")
        if isinstance(resource, dict):
            yield resource


def _ts(at: datetime) -> str:
    return at.strftime("%Y%m%d%H%M%S%z")


def control_id_for(task_id: str) -> str:
    """A 20-character MSH-10 derived from the task id, so re-handing the same delivery reuses it."""
    import hashlib

    return "QX" + hashlib.sha256(task_id.encode()).hexdigest()[:18].upper()


def build_ref(item: dict[str, Any], content: dict[str, Any] | None, hospital: Org, at: datetime) -> str:
    """REF^I12 for one delivery: RF1 (task and referral ids), PRD (the referrer), PID, OBX scores, NTE."""
    task_id, referral_id = str(item["task_id"]), str(item["referral_id"])
    patient = next((r for r in _resources(content) if r.get("resourceType") == "Patient"), {})
    request = next((r for r in _resources(content) if r.get("resourceType") == "ServiceRequest"), {})
    pseudonym = next(
        (i.get("value") for i in patient.get("identifier") or [] if i.get("system") == NS_PSEUDONYM), None
    )
    reasons = [
        c
        for cc in request.get("reasonCode") or []
        for c in cc.get("coding") or []
        if c.get("system") == CS_REASON
    ] or [{"code": r, "display": r} for r in item.get("reasons") or []]
    risk = next(
        (
            e.get("valueCoding", {}).get("code")
            for e in request.get("extension") or []
            if e.get("url") == SD_RISK and e.get("valueCoding", {}).get("system") == CS_RISK
        ),
        str(item.get("risk_level") or ""),
    )
    priority = _PRIORITY.get(str(item.get("priority") or request.get("priority") or "routine"), "R")
    first = reasons[0] if reasons else {"code": "", "display": ""}
    segments = [
        "|".join(
            [
                "MSH",
                "^~\\&",
                QIXIN,
                "HUB",
                "HIS",
                escape(hospital.id),
                _ts(at),
                "",
                "REF^I12^REF_I12",
                control_id_for(task_id),
                "P",
                "2.5",
                "",
                "",
                "AL",
                "NE",
                "",
                "UNICODE UTF-8",
            ]
        ),
        "|".join(
            [
                "RF1",
                "P^Pending^HL70283",
                f"{priority}^^HL70280",
                "",
                "",
                "",
                f"{escape(task_id)}^{QIXIN}",
                "",
                "",
                "",
                f"{escape(str(first.get('code', '')))}^{escape(str(first.get('display', '')))}^QIXIN-REASON",
                f"{escape(referral_id)}^{QIXIN}",
            ]
        ),
        "|".join(
            [
                "PRD",
                "RP",
                escape(str(item.get("sender_org") or "")),
                "",
                "",
                "",
                "",
                "",
                f"{escape(str(item.get('sender_org') or ''))}^^{QIXIN}",
            ]
        ),
    ]
    name = (patient.get("name") or [{}])[0]
    family = escape(str(name.get("family") or ""))
    given = escape("".join(name.get("given") or []) or "")
    if not family and name.get("text"):
        family = escape(str(name["text"]))
    birth = str(patient.get("birthDate") or "").replace("-", "")
    ids = f"{escape(pseudonym)}^^^{QIXIN}^PN" if pseudonym else f"{escape(task_id)}^^^{QIXIN}-TASK^RI"
    segments.append(
        "|".join(
            [
                "PID",
                "1",
                "",
                ids,
                "",
                f"{family}^{given}" if family or given else "",
                "",
                birth,
                _GENDER.get(str(patient.get("gender")), "U"),
            ]
        )
    )
    obx = 0
    for resource in _resources(content):
        if resource.get("resourceType") != "Observation" or "valueInteger" not in resource:
            continue
        code = next((c.get("code") for c in resource.get("code", {}).get("coding") or []), None)
        if code not in SPEC_BY_CODE:
            continue
        obx += 1
        display = next((c.get("display") for c in resource["code"]["coding"]), "") or ""
        segments.append(
            "|".join(
                [
                    "OBX",
                    str(obx),
                    "NM",
                    f"{code}^{escape(display)}^LN",
                    "",
                    str(resource["valueInteger"]),
                    "",
                    "",
                    "",
                    "",
                    "",
                    "F",
                ]
            )
        )
    notes = [n.get("text") for n in request.get("note") or [] if n.get("text")]
    notes.insert(
        0, f"风险等级 {risk}；转介原因：" + "、".join(str(r.get("display") or r.get("code")) for r in reasons)
    )
    for k, note in enumerate(notes, start=1):
        segments.append("|".join(["NTE", str(k), "L", escape(str(note))]))
    return "\r".join(segments) + "\r"
