"""The Qixin referral profile on FHIR R4B: structural validation by fhir.resources, then our own rules.

fhir.resources checks types and structure; it does not check our codes, cardinalities, references
inside the Bundle or the consistency between resources. Every problem becomes an ``Issue`` naming the
JSON path and the rule broken, and all issues of a Bundle are reported together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from schemas.envelope import AgencyType, ReferralFacts, RiskLevel

BASE = "https://qixin.example.org/fhir"
CS_MESSAGE_EVENT = f"{BASE}/CodeSystem/message-event"
CS_AGENCY_TYPE = f"{BASE}/CodeSystem/agency-type"
CS_REASON = f"{BASE}/CodeSystem/referral-reason"
CS_RISK = f"{BASE}/CodeSystem/risk-level"
SD_RISK = f"{BASE}/StructureDefinition/risk-level"
SD_TOWN = f"{BASE}/StructureDefinition/town"
SD_SCHOOL = f"{BASE}/StructureDefinition/school"
SD_GRADE = f"{BASE}/StructureDefinition/grade"
NS_PSEUDONYM = f"{BASE}/NamingSystem/student-pseudonym"
ORG_ENDPOINT_PREFIX = "urn:qixin:org:"

MAX_BUNDLE_BYTES = 1_000_000


@dataclass(frozen=True)
class Issue:
    """One problem in a submitted Bundle: where (JSON path), which rule, what is wrong."""

    path: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "rule": self.rule, "message": self.message}


class ProfileError(ValueError):
    """The Bundle breaks the profile; ``issues`` lists every problem found."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        first = issues[0] if issues else Issue("$", "unknown", "invalid")
        more = f" (+{len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(f"{first.path}: {first.message}{more}")


@dataclass(frozen=True)
class ValidatedReferral:
    """What the edge hands to the pipeline after a Bundle passed the profile."""

    message_id: str
    event: str
    sender_org: str
    student_pseudonym: str
    facts: ReferralFacts
    bundle: dict[str, Any] = field(repr=False)

    @property
    def idempotency_key(self) -> str:
        return f"{self.sender_org}:{self.message_id}"

    @property
    def referral_id(self) -> str:
        """Stable across resubmissions of the same message: the hub's dedupe key."""
        digest = hashlib.sha256(self.idempotency_key.encode()).hexdigest()
        return f"ref-{digest[:24]}"


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _structural_issues(data: Mapping[str, Any]) -> list[Issue]:
    try:
        Bundle.model_validate(data)
    except ValidationError as exc:
        return [
            Issue(_loc_to_path(tuple(err["loc"])), f"fhir-{err['type']}", err["msg"])
            for err in exc.errors()
        ]
    return []


class _Reader:
    """Walks the raw Bundle dict collecting issues instead of stopping at the first."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.issues: list[Issue] = []
        self.by_url: dict[str, tuple[int, dict[str, Any]]] = {}
        for i, entry in enumerate(data.get("entry") or []):
            res = entry.get("resource") or {}
            if url := entry.get("fullUrl"):
                self.by_url[url] = (i, res)
            rid = res.get("id")
            if rid and res.get("resourceType"):
                self.by_url.setdefault(f"{res['resourceType']}/{rid}", (i, res))

    def fail(self, path: str, rule: str, message: str) -> None:
        self.issues.append(Issue(path, rule, message))

    def of_type(self, rtype: str) -> list[tuple[int, dict[str, Any]]]:
        return [
            (i, e.get("resource") or {})
            for i, e in enumerate(self.data.get("entry") or [])
            if (e.get("resource") or {}).get("resourceType") == rtype
        ]

    def one(self, rtype: str) -> tuple[int, dict[str, Any]] | None:
        found = self.of_type(rtype)
        if len(found) != 1:
            self.fail("$.entry", "cardinality", f"exactly one {rtype} is required, found {len(found)}")
            return None
        return found[0]

    def resolve(self, ref: Mapping[str, Any] | None, path: str, rtype: str) -> dict[str, Any] | None:
        target = (ref or {}).get("reference")
        if not target:
            self.fail(path, "reference-required", f"a reference to a {rtype} is required")
            return None
        hit = self.by_url.get(target)
        if hit is None:
            self.fail(path, "reference-unresolved", f"'{target}' does not resolve inside the Bundle")
            return None
        if hit[1].get("resourceType") != rtype:
            self.fail(path, "reference-type", f"'{target}' is a {hit[1].get('resourceType')}, not a {rtype}")
            return None
        return hit[1]


def _org_id(org: Mapping[str, Any]) -> str | None:
    for ident in org.get("identifier") or []:
        if ident.get("value"):
            return str(ident["value"])
    return org.get("id")


def _org_type(org: Mapping[str, Any]) -> str | None:
    for cc in org.get("type") or []:
        for coding in cc.get("coding") or []:
            if coding.get("system") == CS_AGENCY_TYPE:
                return str(coding.get("code"))
    return None


def _ext(resource: Mapping[str, Any], url: str) -> Any:
    for ext in resource.get("extension") or []:
        if ext.get("url") == url:
            for key, value in ext.items():
                if key.startswith("value"):
                    return value
    return None


def _age(birth: str | None, at: datetime) -> int | None:
    if not birth or len(birth) < 7:
        return None
    year, month = int(birth[:4]), int(birth[5:7])
    return at.year - year - (1 if at.month < month else 0)


def validate_referral(data: Mapping[str, Any], *, size: int | None = None,
                      now: datetime | None = None) -> ValidatedReferral:
    """Validate a referral message Bundle; raise ``ProfileError`` with every issue found."""
    if size is not None and size > MAX_BUNDLE_BYTES:
        raise ProfileError([Issue("$", "size-limit", f"Bundle is {size} bytes; the limit is {MAX_BUNDLE_BYTES}")])
    if not isinstance(data, Mapping) or data.get("resourceType") != "Bundle":
        raise ProfileError([Issue("$.resourceType", "resource-type", "a FHIR Bundle is required")])
    issues = _structural_issues(data)
    if issues:
        raise ProfileError(issues)
    now = now or datetime.now(UTC)
    r = _Reader(data)
    if data.get("type") != "message":
        r.fail("$.type", "bundle-type", "a referral is a Bundle of type 'message'")
    entries = data.get("entry") or []
    if not entries or (entries[0].get("resource") or {}).get("resourceType") != "MessageHeader":
        r.fail("$.entry[0]", "message-header-first", "the first entry of a message Bundle must be a MessageHeader")
    header = r.one("MessageHeader")
    task = r.one("Task")
    service_request = r.one("ServiceRequest")
    patient = r.one("Patient")
    event = sender_org = ""
    sender: dict[str, Any] | None = None
    if header:
        hi, h = header
        base = f"$.entry[{hi}].resource"
        coding = h.get("eventCoding") or {}
        event = str(coding.get("code") or "")
        if coding.get("system") != CS_MESSAGE_EVENT or event != "referral-request":
            r.fail(f"{base}.eventCoding", "code-unknown", "eventCoding must be referral-request from " + CS_MESSAGE_EVENT)
        sender = r.resolve(h.get("sender"), f"{base}.sender", "Organization")
        if sender:
            sender_org = _org_id(sender) or ""
        if task:
            focus = [f.get("reference") for f in h.get("focus") or []]
            if entries[task[0]].get("fullUrl") not in focus:
                r.fail(f"{base}.focus", "consistency", "MessageHeader.focus must reference the Task")
    sender_type = _org_type(sender) if sender else None
    if sender and sender_type not in {t.value for t in AgencyType}:
        r.fail("$.entry", "code-unknown", f"sender organisation has no known agency-type code (got {sender_type!r})")
    risk: int | None = None
    reasons: list[str] = []
    priority = "routine"
    if service_request:
        si, sr = service_request
        base = f"$.entry[{si}].resource"
        priority = str(sr.get("priority") or "routine")
        for k, cc in enumerate(sr.get("reasonCode") or []):
            for coding in cc.get("coding") or []:
                if coding.get("system") == CS_REASON:
                    reasons.append(str(coding.get("code")))
        if not reasons:
            r.fail(f"{base}.reasonCode", "cardinality", "at least one referral reason from " + CS_REASON)
        risk_coding = _ext(sr, SD_RISK)
        try:
            risk = int((risk_coding or {}).get("code"))
            RiskLevel(risk)
        except (TypeError, ValueError):
            r.fail(f"{base}.extension", "code-unknown", "risk-level extension with code 1-4 is required")
            risk = None
    if task and service_request:
        ti, t = task
        if (t.get("focus") or {}).get("reference") != entries[service_request[0]].get("fullUrl"):
            r.fail(f"$.entry[{ti}].resource.focus", "consistency", "Task.focus must reference the ServiceRequest")
        if t.get("status") != "requested":
            r.fail(f"$.entry[{ti}].resource.status", "state", "a new referral's Task.status must be 'requested'")
    pseudonym = ""
    age = town = school = grade = gender = None
    if patient:
        pi, p = patient
        base = f"$.entry[{pi}].resource"
        for ident in p.get("identifier") or []:
            if ident.get("system") == NS_PSEUDONYM:
                pseudonym = str(ident.get("value") or "")
        if not pseudonym:
            r.fail(f"{base}.identifier", "cardinality", "a pseudonymous student identifier is required")
        age = _age(p.get("birthDate"), now)
        if age is None:
            r.fail(f"{base}.birthDate", "required", "birth year-month (YYYY-MM) is required")
        town, school, grade = _ext(p, SD_TOWN), _ext(p, SD_SCHOOL), _ext(p, SD_GRADE)
        gender = p.get("gender")
    requested: str | None = None
    if header:
        for dest in header[1].get("destination") or []:
            endpoint = str(dest.get("endpoint") or "")
            if endpoint.startswith(ORG_ENDPOINT_PREFIX):
                requested = endpoint[len(ORG_ENDPOINT_PREFIX):]
                break
    if r.issues:
        raise ProfileError(r.issues)
    facts = ReferralFacts(
        source_org=sender_org,
        source_type=AgencyType(sender_type),
        reasons=reasons,
        risk_level=RiskLevel(risk or 1),
        priority=priority,
        age=age,
        gender=gender,
        town=town,
        school=school,
        grade=grade,
        requested_recipient=requested,
    )
    return ValidatedReferral(
        message_id=str((header[1] if header else {}).get("id") or data.get("id") or ""),
        event=event,
        sender_org=sender_org,
        student_pseudonym=pseudonym,
        facts=facts,
        bundle=dict(data),
    )
