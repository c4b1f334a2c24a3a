"""FHIR R4B message Bundles of the Qixin profile, built from connector drafts: pure and deterministic.

The same draft and the same ``authored_at`` always give the same bytes: MessageHeader ids derive from
the source record (so a re-run re-sends the same ids and the hub deduplicates), fullUrls are UUIDv5 of
the message id and the resource's role, and nothing reads a clock.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from schemas.canonical import (
    CS_AGENCY_TYPE,
    CS_BUSINESS_STATUS,
    CS_DATA_CATEGORY,
    CS_LEGAL_BASIS,
    CS_MESSAGE_EVENT,
    CS_PURPOSE,
    CS_REASON,
    CS_RISK,
    NS_ORG,
    NS_PSEUDONYM,
    NS_REFERRAL,
    ORG_ENDPOINT_PREFIX,
    SD_EMERGENCY_REASON,
    SD_GRADE,
    SD_LEGAL_BASIS,
    SD_RISK,
    SD_SCHOOL,
    SD_TOWN,
)
from schemas.codesystem import terminology
from schemas.scoring import LOINC, SPECS, Scale

_NAMESPACE = uuid.UUID("5b0e3c1e-8f0a-4d52-9a57-71c0a3f1e2d4")
_V3_ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
_V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_TOTAL_DISPLAY = {Scale.PHQ9: "PHQ-9 total score", Scale.GAD7: "GAD-7 total score"}


@dataclass(frozen=True)
class Org:
    id: str
    type: str  # agency-type code
    name: str = ""


@dataclass(frozen=True)
class Student:
    pseudonym: str
    birth: str  # YYYY-MM
    gender: str
    town: str
    name: dict[str, Any] | None = None  # FHIR HumanName
    school: str | None = None  # organisation id
    grade: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class Guardian:
    relationship: str = "GUARD"  # v3 RoleCode
    name: dict[str, Any] | None = None
    phone: str | None = None


@dataclass(frozen=True)
class ConsentGrant:
    """A guardian's separate consent as the agency recorded it, scoped as the profile requires."""

    recipients: tuple[str, ...]  # agency types or organisation ids
    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    start: date
    end: date | None = None
    student_assent: bool = False


@dataclass(frozen=True)
class ScaleScore:
    scale: Scale
    items: tuple[int, ...] | None  # in form order, or None when only the total is known
    total: int | None
    effective: datetime


@dataclass(frozen=True)
class Note:
    """Narrative the agency attaches (family situation, case facts), tagged with its data category."""

    category: str
    title: str
    text: str
    effective: datetime


@dataclass(frozen=True)
class ReferralDraft:
    sender: Org
    record_id: str
    student: Student
    reasons: tuple[str, ...]
    risk_level: int
    local_id: str | None = None  # the agency's own number for the referral (Task.identifier)
    legal_basis: str | None = None  # consent | statutory | emergency; None: the hub infers from Consent
    emergency_reason: str | None = None
    guardian: Guardian | None = None
    consent: ConsentGrant | None = None
    scores: tuple[ScaleScore, ...] = ()
    notes: tuple[Note, ...] = ()
    summary: str | None = None
    requested_recipient: Org | None = None

    @property
    def message_id(self) -> str:
        return f"mh-{self.record_id}"


def priority_of(risk_level: int) -> str:
    """The FHIR request priority the risk level calls for (CodeSystem/risk-level property)."""
    return str(terminology().system(CS_RISK).concepts[str(risk_level)].properties["priority"])


def _display(system: str, code: str) -> str | None:
    return terminology().display(system, code, "zh")


def _coding(system: str, code: str) -> dict[str, Any]:
    out = {"system": system, "code": code}
    display = _display(system, code)
    if display:
        out["display"] = display
    return out


def _iso(value: datetime | date) -> str:
    return value.isoformat()


class _Ids:
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id

    def url(self, role: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{self.message_id}/{role}')}"

    def ref(self, role: str) -> dict[str, str]:
        return {"reference": self.url(role)}


def _organization(org: Org, role: str, ids: _Ids) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "id": org.id,
        "identifier": [{"system": NS_ORG, "value": org.id}],
        "type": [{"coding": [_coding(CS_AGENCY_TYPE, org.type)]}],
    }
    if org.name:
        resource["name"] = org.name
    return {"fullUrl": ids.url(role), "resource": resource}


def _header(
    event: str, sender: Org, ids: _Ids, focus: str, receiver: Org | None, *, receiver_role: str = "receiver"
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": ids.message_id,
        "eventCoding": {"system": CS_MESSAGE_EVENT, "code": event},
        "source": {"name": f"{sender.id}-connector", "endpoint": f"{ORG_ENDPOINT_PREFIX}{sender.id}"},
        "sender": ids.ref("sender"),
    }
    if receiver is not None:
        resource["destination"] = [
            {"endpoint": f"{ORG_ENDPOINT_PREFIX}{receiver.id}", "receiver": ids.ref(receiver_role)}
        ]
    resource["focus"] = [ids.ref(focus)]
    return {"fullUrl": ids.url("header"), "resource": resource}


def _patient(student: Student, ids: _Ids, *, demographics: bool = True) -> dict[str, Any]:
    extension: list[dict[str, Any]] = [{"url": SD_TOWN, "valueCode": student.town}]
    if student.school:
        extension.append({"url": SD_SCHOOL, "valueCode": student.school})
    if student.grade:
        extension.append({"url": SD_GRADE, "valueString": student.grade})
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "patient",
        "extension": extension,
        "identifier": [{"system": NS_PSEUDONYM, "value": student.pseudonym}],
    }
    if demographics and student.name:
        resource["name"] = [student.name]
    if demographics and student.phone:
        resource["telecom"] = [{"system": "phone", "value": student.phone}]
    resource["gender"] = student.gender
    resource["birthDate"] = student.birth
    return {"fullUrl": ids.url("patient"), "resource": resource}


def _observation_of(score: ScaleScore, ids: _Ids, role: str) -> dict[str, Any]:
    spec = SPECS[score.scale]
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": role,
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": spec.total, "display": _TOTAL_DISPLAY[score.scale]}]},
        "subject": ids.ref("patient"),
        "effectiveDateTime": _iso(score.effective),
    }
    total = score.total if score.total is not None else (sum(score.items) if score.items else None)
    if total is not None:
        resource["valueInteger"] = total
    if score.items:
        resource["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": code}]}, "valueInteger": value}
            for code, value in zip(spec.items, score.items, strict=True)
        ]
    return {"fullUrl": ids.url(role), "resource": resource}


def _note_observation(note: Note, ids: _Ids, role: str) -> dict[str, Any]:
    return {
        "fullUrl": ids.url(role),
        "resource": {
            "resourceType": "Observation",
            "id": role,
            "status": "final",
            "category": [{"coding": [_coding(CS_DATA_CATEGORY, note.category)]}],
            "code": {"text": note.title},
            "subject": ids.ref("patient"),
            "effectiveDateTime": _iso(note.effective),
            "valueString": note.text,
        },
    }


def _guardian(guardian: Guardian, ids: _Ids) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "RelatedPerson",
        "id": "guardian",
        "patient": ids.ref("patient"),
        "relationship": [{"coding": [{"system": _V3_ROLE, "code": guardian.relationship}]}],
    }
    if guardian.name:
        resource["name"] = [guardian.name]
    if guardian.phone:
        resource["telecom"] = [{"system": "phone", "value": guardian.phone}]
    return {"fullUrl": ids.url("guardian"), "resource": resource}


def _recipient_identifier(recipient: str) -> dict[str, str]:
    if terminology().has(CS_AGENCY_TYPE, recipient):
        return {"system": CS_AGENCY_TYPE, "value": recipient}
    return {"system": NS_ORG, "value": recipient}


def _consent(grant: ConsentGrant, has_guardian: bool, ids: _Ids) -> dict[str, Any]:
    performers = []
    if has_guardian:
        performers.append(ids.ref("guardian"))
    if grant.student_assent or not has_guardian:
        performers.append(ids.ref("patient"))
    period: dict[str, str] = {"start": _iso(grant.start)}
    if grant.end is not None:
        period["end"] = _iso(grant.end)
    return {
        "fullUrl": ids.url("consent"),
        "resource": {
            "resourceType": "Consent",
            "id": "consent",
            "status": "active",
            "scope": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "patient-privacy",
                    }
                ]
            },
            "category": [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}],
            "patient": ids.ref("patient"),
            "dateTime": _iso(grant.start),
            "performer": performers,
            "policyRule": {"coding": [_coding(CS_LEGAL_BASIS, "consent")]},
            "provision": {
                "type": "permit",
                "period": period,
                "actor": [
                    {
                        "role": {"coding": [{"system": _V3_PARTICIPATION, "code": "IRCP"}]},
                        "reference": {"identifier": _recipient_identifier(r)},
                    }
                    for r in grant.recipients
                ],
                "purpose": [{"system": CS_PURPOSE, "code": p} for p in grant.purposes],
                "class": [{"system": CS_DATA_CATEGORY, "code": c} for c in grant.categories],
            },
        },
    }


def build_referral(draft: ReferralDraft, authored_at: datetime) -> dict[str, Any]:
    """The referral-request message Bundle of a draft, as of ``authored_at`` (an aware datetime)."""
    ids = _Ids(draft.message_id)
    priority = priority_of(draft.risk_level)
    when = _iso(authored_at)
    receiver = draft.requested_recipient
    entries: list[dict[str, Any]] = [_header("referral-request", draft.sender, ids, "task", receiver)]
    task: dict[str, Any] = {"resourceType": "Task", "id": "task"}
    if draft.local_id:
        task["identifier"] = [
            {"system": f"{ORG_ENDPOINT_PREFIX}{draft.sender.id}:referral", "value": draft.local_id}
        ]
    task.update(
        {
            "status": "requested",
            "intent": "order",
            "priority": priority,
            "focus": ids.ref("request"),
            "for": ids.ref("patient"),
            "authoredOn": when,
            "requester": ids.ref("sender"),
        }
    )
    entries.append({"fullUrl": ids.url("task"), "resource": task})

    extension: list[dict[str, Any]] = [
        {"url": SD_RISK, "valueCoding": _coding(CS_RISK, str(draft.risk_level))}
    ]
    if draft.legal_basis:
        extension.append({"url": SD_LEGAL_BASIS, "valueCoding": _coding(CS_LEGAL_BASIS, draft.legal_basis)})
    if draft.legal_basis == "emergency" and draft.emergency_reason:
        extension.append({"url": SD_EMERGENCY_REASON, "valueString": draft.emergency_reason})
    roles_scores = [(f"scale-{s.scale.value}", s) for s in draft.scores]
    roles_notes = [(f"note-{k + 1}", n) for k, n in enumerate(draft.notes)]
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": "request",
        "extension": extension,
        "status": "active",
        "intent": "order",
        "priority": priority,
        "code": {"coding": [_coding(CS_REASON, draft.reasons[0])]},
        "reasonCode": [{"coding": [_coding(CS_REASON, r)]} for r in draft.reasons],
        "subject": ids.ref("patient"),
        "authoredOn": when,
        "requester": ids.ref("sender"),
    }
    if receiver is not None:
        request["performer"] = [ids.ref("receiver")]
    support = [ids.ref(role) for role, _ in (*roles_scores, *roles_notes)]
    if support:
        request["supportingInfo"] = support
    if draft.summary:
        request["note"] = [{"text": draft.summary}]
    entries.append({"fullUrl": ids.url("request"), "resource": request})
    entries.append(_patient(draft.student, ids))
    if draft.guardian is not None:
        entries.append(_guardian(draft.guardian, ids))
    if draft.consent is not None:
        entries.append(_consent(draft.consent, draft.guardian is not None, ids))
    entries.append(_organization(draft.sender, "sender", ids))
    if receiver is not None:
        entries.append(_organization(receiver, "receiver", ids))
    entries.extend(_observation_of(score, ids, role) for role, score in roles_scores)
    entries.extend(_note_observation(note, ids, role) for role, note in roles_notes)
    return {
        "resourceType": "Bundle",
        "id": f"b-{draft.record_id}",
        "type": "message",
        "timestamp": when,
        "entry": entries,
    }


@dataclass(frozen=True)
class StatusMessage:
    """A status change with what the referral-status / referral-feedback Bundles need beyond it."""

    sender: Org
    message_id: str
    task_id: str
    referral_id: str
    status: str
    at: datetime
    business_status: str | None = None
    reason: str | None = None
    feedback: str | None = None
    recipient: Org | None = None  # the referrer the feedback goes to
    student: Student | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_status(msg: StatusMessage) -> dict[str, Any]:
    """The referral-status message Bundle (a recipient moves its Task)."""
    ids = _Ids(msg.message_id)
    entries = [_header("referral-status", msg.sender, ids, "task", msg.recipient)]
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": msg.task_id,
        "identifier": [{"system": NS_REFERRAL, "value": msg.referral_id}],
        "status": msg.status,
        "intent": "order",
    }
    if msg.business_status:
        task["businessStatus"] = {"coding": [_coding(CS_BUSINESS_STATUS, msg.business_status)]}
    if msg.reason:
        task["statusReason"] = {"text": msg.reason}
    task["lastModified"] = _iso(msg.at)
    task["owner"] = ids.ref("sender")
    entries.append({"fullUrl": ids.url("task"), "resource": task})
    entries.append(_organization(msg.sender, "sender", ids))
    if msg.recipient is not None:
        entries.append(_organization(msg.recipient, "receiver", ids))
    return {
        "resourceType": "Bundle",
        "id": f"b-{msg.message_id}",
        "type": "message",
        "timestamp": _iso(msg.at),
        "entry": entries,
    }


def build_feedback(msg: StatusMessage) -> dict[str, Any]:
    """The referral-feedback message Bundle: the feedback to the referrer that closes the loop."""
    if msg.recipient is None or msg.student is None or not msg.feedback:
        raise ValueError("feedback needs the referrer, the student's pseudonym and the feedback text")
    ids = _Ids(msg.message_id)
    entries = [_header("referral-feedback", msg.sender, ids, "communication", msg.recipient)]
    entries.append(
        {
            "fullUrl": ids.url("communication"),
            "resource": {
                "resourceType": "Communication",
                "id": "feedback",
                "basedOn": [{"identifier": {"system": NS_REFERRAL, "value": msg.referral_id}}],
                "status": "completed",
                "category": [{"coding": [_coding(CS_DATA_CATEGORY, "education")]}],
                "subject": ids.ref("patient"),
                "sent": _iso(msg.at),
                "recipient": [ids.ref("receiver")],
                "sender": ids.ref("sender"),
                "payload": [{"contentString": msg.feedback}],
            },
        }
    )
    entries.append(_patient(msg.student, ids, demographics=False))
    entries.append(_organization(msg.sender, "sender", ids))
    entries.append(_organization(msg.recipient, "receiver", ids))
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": msg.task_id,
        "identifier": [{"system": NS_REFERRAL, "value": msg.referral_id}],
        "status": msg.status,
        "intent": "order",
        "businessStatus": {"coding": [_coding(CS_BUSINESS_STATUS, msg.business_status or "feedback-sent")]},
        "for": ids.ref("patient"),
    }
    entries.append({"fullUrl": ids.url("task"), "resource": task})
    return {
        "resourceType": "Bundle",
        "id": f"b-{msg.message_id}",
        "type": "message",
        "timestamp": _iso(msg.at),
        "entry": entries,
    }


def encode(bundle: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent: compact UTF-8 JSON in the builder's key order."""
    return json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
