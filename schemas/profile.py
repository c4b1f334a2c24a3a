"""The Qixin referral profile on FHIR R4B: structural validation by fhir.resources, then our own rules.

fhir.resources checks types and structure; it does not check coded values, our cardinalities,
references inside the Bundle or the consistency between resources. Every problem becomes an ``Issue``
naming the JSON path (``$.entry[3].resource.birthDate``) and the rule broken, and all issues of a
Bundle are reported together.

Rules (stable names, clients key on them): size-limit, resource-type, fhir-<pydantic type>,
bundle-type, message-header-first, fullurl-required, fullurl-duplicate, id-duplicate, resource-unsupported,
contained-unsupported, event-unexpected, cardinality, required, code-unknown, reference-required,
reference-unresolved, reference-type, consistency, state, priority-risk, birthdate-precision,
date-future, identifier-system, identifier-format, period, consent-grantor, consent-actor,
consent-provision, emergency-reason-required, reason-required, observation-category,
questionnaire-unsupported, score-value, score-range, score-total, score-duplicate.

The legal basis a referral claims (``ReferralFacts.legal_basis_claimed``) is read from the
ServiceRequest extension ``StructureDefinition/legal-basis`` (valueCoding from CodeSystem/legal-basis);
without it, a Bundle that carries a Consent claims ``consent`` and any other claims nothing. An
``emergency`` claim needs the ``StructureDefinition/emergency-reason`` extension (valueString).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from schemas import fhirspeed, scoring
from schemas.canonical import (  # noqa: F401  (re-exported: the pipeline imports them from here)
    BASE,
    CS_AGENCY_TYPE,
    CS_BUSINESS_STATUS,
    CS_DATA_CATEGORY,
    CS_LEGAL_BASIS,
    CS_MESSAGE_EVENT,
    CS_PURPOSE,
    CS_REASON,
    CS_RISK,
    CS_TOWN,
    NS_NATIONAL_ID,
    NS_ORG,
    NS_PSEUDONYM,
    NS_REFERRAL,
    NS_STUDENT_ID,
    ORG_ENDPOINT_PREFIX,
    SD_EMERGENCY_REASON,
    SD_GRADE,
    SD_LEGAL_BASIS,
    SD_RISK,
    SD_SCHOOL,
    SD_STUDENT_ASSENT,
    SD_TOWN,
    VS_GUARDIAN,
)
from schemas.codesystem import Terminology, terminology
from schemas.envelope import AGENCY_TYPES, AgencyType, ConsentSummary, ReferralFacts, RiskLevel

V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

MAX_BUNDLE_BYTES = 1_000_000
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")

EVENTS = ("referral-request", "referral-status", "referral-feedback", "consent-update")
SUPPORTED_RESOURCES = frozenset(
    {
        "MessageHeader",
        "Task",
        "ServiceRequest",
        "Patient",
        "RelatedPerson",
        "Consent",
        "Organization",
        "PractitionerRole",
        "QuestionnaireResponse",
        "Observation",
        "Communication",
        "Condition",
    }
)
# FHIR required bindings fhir.resources does not enforce.
TASK_STATUS = frozenset(
    {
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    }
)
REQUEST_INTENT = frozenset(
    {
        "proposal",
        "plan",
        "directive",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    }
)
TASK_INTENT = REQUEST_INTENT | {"unknown"}
PRIORITIES = ("routine", "urgent", "asap", "stat")
GENDERS = frozenset({"male", "female", "other", "unknown"})
CONSENT_STATUS = frozenset({"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"})
OBSERVATION_STATUS = frozenset({"preliminary", "final", "amended", "corrected"})
QR_STATUS = frozenset({"completed", "amended"})
COMMUNICATION_STATUS = frozenset(
    {
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    }
)
REASON_REQUIRED = frozenset({"rejected", "failed", "entered-in-error"})
_BIRTH_YM = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _direct_type_lookup() -> None:
    """Make fhir_core find a resource's class without first trying to import it as a module.

    fhir_core resolves each Bundle entry's ``resourceType`` through pydantic's ``import_string``
    with a dotted path ("fhir.resources.R4B.patient.Patient"), which first attempts to import the
    whole path as a module and fails (≈ 45 µs an entry) before taking the attribute. The
    "module:attribute" form goes straight to the attribute. Same classes, same validation; about a
    fifth of ``Bundle.model_validate`` here (bench/README.md). Done once, at import, before any
    thread validates.
    """
    try:
        from fhir_core.constraints import FHIR_TYPES_MAPS
    except ImportError:  # another fhir_core layout: keep the library's own lookup
        return
    for key, path in list(FHIR_TYPES_MAPS.items()):
        if isinstance(path, str) and ":" not in path and "." in path:
            module, _, attribute = path.rpartition(".")
            FHIR_TYPES_MAPS[key] = f"{module}:{attribute}"


_direct_type_lookup()
# fhir_core's per-object model validators, made to reuse per-class constants (see schemas/fhirspeed.py).
fhirspeed.install()


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
    """What the edge hands to the pipeline after a referral-request Bundle passed the profile."""

    message_id: str
    event: str
    sender_org: str
    student_pseudonym: str
    facts: ReferralFacts
    bundle: dict[str, Any] = field(repr=False)
    scores: tuple[scoring.ScaleResult, ...] = ()
    authored_at: datetime | None = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.sender_org}:{self.message_id}"

    @property
    def referral_id(self) -> str:
        """Stable across resubmissions of the same message: the hub's dedupe key."""
        digest = hashlib.sha256(self.idempotency_key.encode()).hexdigest()
        return f"ref-{digest[:24]}"


@dataclass(frozen=True)
class StatusUpdate:
    """A referral-status message: a recipient (or the requester) moves a referral's Task."""

    message_id: str
    event: str
    sender_org: str
    referral_id: str  # the hub's referral id (Task.identifier in NamingSystem/referral)
    task_id: str  # Task.id: the hub's task id of the delivery
    status: str
    business_status: str | None
    reason: str | None
    bundle: dict[str, Any] = field(repr=False)

    @property
    def idempotency_key(self) -> str:
        return f"{self.sender_org}:{self.message_id}"


@dataclass(frozen=True)
class FeedbackMessage:
    """A referral-feedback message: the recipient's feedback to the referrer (closes the loop)."""

    message_id: str
    event: str
    sender_org: str
    referral_id: str
    student_pseudonym: str
    recipients: tuple[str, ...]  # organisation ids the Communication is addressed to
    categories: tuple[str, ...]  # data categories the feedback declares
    task_status: str | None
    bundle: dict[str, Any] = field(repr=False)

    @property
    def idempotency_key(self) -> str:
        return f"{self.sender_org}:{self.message_id}"


@dataclass(frozen=True)
class ConsentUpdate:
    """A consent-update message: consents given, changed or revoked for a student."""

    message_id: str
    event: str
    sender_org: str
    student_pseudonym: str
    consents: tuple[ConsentSummary, ...]
    bundle: dict[str, Any] = field(repr=False)

    @property
    def idempotency_key(self) -> str:
        return f"{self.sender_org}:{self.message_id}"


ValidatedMessage = ValidatedReferral | StatusUpdate | FeedbackMessage | ConsentUpdate


# --- small readers that never raise on malformed input ---------------------------------------------------


# Parsed JSON is plain dicts and lists; concrete type checks are several times faster than ABC checks.
def _d(x: Any) -> Mapping[str, Any]:
    return x if type(x) is dict else {}


def _l(x: Any) -> list[Any]:
    return x if type(x) is list else []


def _s(x: Any) -> str:
    return x if isinstance(x, str) else ""


def _codings(concept: Any) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for k, c in enumerate(_l(_d(concept).get("coding"))):
        if type(c) is dict:
            yield k, c


def _ext(resource: Mapping[str, Any], url: str) -> tuple[int, Mapping[str, Any]] | None:
    for k, ext in enumerate(_l(resource.get("extension"))):
        if type(ext) is dict and ext.get("url") == url:
            return k, ext
    return None


def _ext_value(resource: Mapping[str, Any], url: str) -> Any:
    hit = _ext(resource, url)
    if hit is None:
        return None
    return next((v for k, v in hit[1].items() if k.startswith("value")), None)


def _org_id(org: Mapping[str, Any]) -> str | None:
    for ident in _l(org.get("identifier")):
        if _d(ident).get("system") == NS_ORG and _d(ident).get("value"):
            return str(ident["value"])
    return None


def _org_type(org: Mapping[str, Any]) -> str | None:
    for cc in _l(org.get("type")):
        for _, coding in _codings(cc):
            if coding.get("system") == CS_AGENCY_TYPE:
                return _s(coding.get("code")) or None
    return None


def parse_instant(value: Any, *, end: bool = False) -> datetime | None:
    """A FHIR date/dateTime as an aware datetime (local dates in Asia/Shanghai).

    With ``end`` a partial date means the end of that day/month/year (exclusive), so a consent
    ``end: 2027-05-28`` is valid through the whole of that day.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        if "T" in value:
            dt = datetime.fromisoformat(value)
            return dt if dt.tzinfo else dt.replace(tzinfo=SHANGHAI)
        parts = [int(p) for p in value.split("-")]
    except ValueError:
        return None
    year, month, day = [*parts, 1, 1][:3]
    try:
        start = datetime(year, month, day, tzinfo=SHANGHAI)
    except ValueError:
        return None
    if not end:
        return start
    if len(parts) == 1:
        return start.replace(year=year + 1)
    if len(parts) == 2:
        return start.replace(year=year + month // 12, month=month % 12 + 1)
    return start + timedelta(days=1)


def age_at(birth: str | None, at: datetime) -> int | None:
    """Whole years from a birth year-month; in the birth month the birthday counts as reached."""
    if not birth or not _BIRTH_YM.match(birth[:7]) or len(birth) < 7:
        return None
    year, month = int(birth[:4]), int(birth[5:7])
    local = at.astimezone(SHANGHAI)
    return local.year - year - (1 if local.month < month else 0)


def national_id_valid(value: str) -> bool:
    """GB 11643-1999 resident identity number: 17 digits and an ISO 7064 MOD 11-2 check character."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    total = sum(int(ch) * w for ch, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == value[17].upper()


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
            Issue(_loc_to_path(tuple(err["loc"])), f"fhir-{err['type']}", err["msg"]) for err in exc.errors()
        ]
    return []


# --- the checker -------------------------------------------------------------------------------------------

Found = tuple[int, Mapping[str, Any]]


class _Checker:
    """Walks the raw Bundle dict collecting issues instead of stopping at the first."""

    def __init__(self, data: Mapping[str, Any], now: datetime) -> None:
        self.data = data
        self.now = now
        self.t: Terminology = terminology()
        self.issues: list[Issue] = []
        self.entries: list[tuple[int, str, Mapping[str, Any]]] = []
        self.by_ref: dict[str, Found] = {}
        seen_urls: set[str] = set()
        seen_ids: set[tuple[str, str]] = set()
        for i, entry in enumerate(_l(data.get("entry"))):
            res = _d(_d(entry).get("resource"))
            url = _s(_d(entry).get("fullUrl"))
            rtype = _s(res.get("resourceType"))
            self.entries.append((i, url, res))
            if not url:
                self.fail(
                    f"$.entry[{i}].fullUrl", "fullurl-required", "every entry of a message needs a fullUrl"
                )
            elif url in seen_urls:
                self.fail(f"$.entry[{i}].fullUrl", "fullurl-duplicate", f"fullUrl '{url}' is used twice")
            else:
                seen_urls.add(url)
                self.by_ref[url] = (i, res)
            rid = _s(res.get("id"))
            if rid and rtype:
                if (rtype, rid) in seen_ids:
                    self.fail(f"$.entry[{i}].resource.id", "id-duplicate", f"{rtype}/{rid} is used twice")
                seen_ids.add((rtype, rid))
                self.by_ref.setdefault(f"{rtype}/{rid}", (i, res))

    # helpers
    def fail(self, path: str, rule: str, message: str) -> None:
        self.issues.append(Issue(path, rule, message))

    @staticmethod
    def at(i: int) -> str:
        return f"$.entry[{i}].resource"

    def of_type(self, rtype: str) -> list[Found]:
        return [(i, res) for i, _, res in self.entries if res.get("resourceType") == rtype]

    def one(self, rtype: str, *, required: bool = True) -> Found | None:
        found = self.of_type(rtype)
        if len(found) == 1:
            return found[0]
        if found or required:
            what = "exactly one" if required else "at most one"
            self.fail("$.entry", "cardinality", f"{what} {rtype} is required, found {len(found)}")
        return None

    def full_url(self, i: int) -> str:
        return self.entries[i][1] if i < len(self.entries) else ""

    def refers_to(self, ref: Any, target: Found | None) -> bool:
        if target is None:
            return False
        hit = self.by_ref.get(_s(_d(ref).get("reference")))
        return hit is not None and hit[0] == target[0]

    def resolve(self, ref: Any, path: str, *types: str, required: bool = True) -> Found | None:
        """The entry a literal reference points at; unresolved references are reported by the sweep."""
        target = _s(_d(ref).get("reference"))
        if not target:
            if required:
                self.fail(path, "reference-required", f"a reference to a {' or '.join(types)} is required")
            return None
        hit = self.by_ref.get(target)
        if hit is None:
            return None
        if types and hit[1].get("resourceType") not in types:
            self.fail(
                path,
                "reference-type",
                f"'{target}' resolves to {hit[1].get('resourceType')}; expected {' or '.join(types)}",
            )
            return None
        return hit

    def subject(
        self, res: Mapping[str, Any], key: str, base: str, patient: Found | None, required: bool = True
    ) -> None:
        """``res[key]`` must reference the Bundle's Patient."""
        if key not in res and not required:
            return
        hit = self.resolve(res.get(key), f"{base}.{key}", "Patient", required=required)
        if hit is not None and patient is not None and hit[0] != patient[0]:
            self.fail(f"{base}.{key}", "consistency", "must reference the Patient of this referral")

    def code(
        self,
        value: Any,
        path: str,
        allowed: frozenset[str] | tuple[str, ...],
        what: str,
        required: bool = True,
    ) -> str | None:
        if value is None:
            if required:
                self.fail(path, "required", f"{what} is required")
            return None
        if value not in allowed:
            self.fail(path, "code-unknown", f"{what} {value!r} is not one of: {', '.join(sorted(allowed))}")
            return None
        return str(value)

    def our_codes(self, concept: Any, path: str, system: str) -> list[str]:
        """Codes of ``system`` in a CodeableConcept, reporting unknown ones."""
        out: list[str] = []
        for k, coding in _codings(concept):
            if coding.get("system") != system:
                continue
            code = _s(coding.get("code"))
            if self.t.has(system, code):
                out.append(code)
            else:
                self.fail(f"{path}.coding[{k}].code", "code-unknown", f"{code!r} is not a code of {system}")
        return out

    def coding_list(self, codings: Any, path: str, system: str, what: str) -> list[str]:
        """Codes of ``system`` in a list of Coding (Consent.provision.purpose/class)."""
        out: list[str] = []
        for k, coding in enumerate(_l(codings)):
            coding = _d(coding)
            code = _s(coding.get("code"))
            if coding.get("system") != system:
                self.fail(f"{path}[{k}].system", "code-unknown", f"{what} must come from {system}")
            elif not self.t.has(system, code):
                self.fail(f"{path}[{k}].code", "code-unknown", f"{code!r} is not a {what} of {system}")
            else:
                out.append(code)
        if not _l(codings):
            self.fail(path, "cardinality", f"at least one {what} from {system} is required")
        return out

    # --- checks shared by every message -----------------------------------------------------------

    def check_bundle(self) -> None:
        if self.data.get("type") != "message":
            self.fail("$.type", "bundle-type", "a Qixin message is a Bundle of type 'message'")
        entries = _l(self.data.get("entry"))
        if not entries or _d(_d(entries[0]).get("resource")).get("resourceType") != "MessageHeader":
            self.fail(
                "$.entry[0]",
                "message-header-first",
                "the first entry of a message Bundle must be a MessageHeader",
            )
        for i, _, res in self.entries:
            rtype = _s(res.get("resourceType"))
            if rtype and rtype not in SUPPORTED_RESOURCES:
                self.fail(
                    f"{self.at(i)}.resourceType",
                    "resource-unsupported",
                    f"{rtype} is not part of the Qixin profile",
                )
            if "contained" in res:
                self.fail(
                    f"{self.at(i)}.contained",
                    "contained-unsupported",
                    "contained resources are not accepted: put each resource in its own entry",
                )
            self._sweep_references(res, self.at(i))

    def _sweep_references(self, node: Any, path: str) -> None:
        """Every literal reference anywhere in a resource must resolve inside the Bundle."""
        if type(node) is dict:
            ref = node.get("reference")
            if type(ref) is str and ref not in self.by_ref and not ref.startswith("#"):
                self.fail(path, "reference-unresolved", f"'{ref}' does not resolve inside the Bundle")
            for key, value in node.items():
                kind = type(value)
                if kind is dict or kind is list:
                    self._sweep_references(value, f"{path}.{key}")
        elif type(node) is list:
            for k, value in enumerate(node):
                kind = type(value)
                if kind is dict or kind is list:
                    self._sweep_references(value, f"{path}[{k}]")

    def check_header(self, expect: str | None) -> tuple[Found | None, str, Mapping[str, Any] | None]:
        header = self.one("MessageHeader")
        if header is None:
            return None, "", None
        hi, h = header
        base = self.at(hi)
        coding = _d(h.get("eventCoding"))
        event = _s(coding.get("code"))
        if coding.get("system") != CS_MESSAGE_EVENT or event not in EVENTS:
            self.fail(
                f"{base}.eventCoding",
                "code-unknown",
                f"eventCoding must be one of {', '.join(EVENTS)} from {CS_MESSAGE_EVENT}",
            )
            event = ""
        elif expect is not None and event != expect:
            self.fail(f"{base}.eventCoding", "event-unexpected", f"expected a {expect} message, got {event}")
        if not (_s(h.get("id")) or _s(self.data.get("id"))):
            self.fail(
                f"{base}.id", "required", "the message needs an id (MessageHeader.id): it keys idempotency"
            )
        sender = self.resolve(h.get("sender"), f"{base}.sender", "Organization")
        sender_org = _org_id(sender[1]) if sender else None
        endpoint = _s(_d(h.get("source")).get("endpoint"))
        if sender_org and endpoint != f"{ORG_ENDPOINT_PREFIX}{sender_org}":
            self.fail(
                f"{base}.source.endpoint",
                "consistency",
                f"source.endpoint must be '{ORG_ENDPOINT_PREFIX}{sender_org}' (the sender)",
            )
        for k, dest in enumerate(_l(h.get("destination"))):
            dest = _d(dest)
            dpath = f"{base}.destination[{k}]"
            dend = _s(dest.get("endpoint"))
            if not dend.startswith(ORG_ENDPOINT_PREFIX) or len(dend) == len(ORG_ENDPOINT_PREFIX):
                self.fail(
                    f"{dpath}.endpoint",
                    "required",
                    f"destination endpoint must read '{ORG_ENDPOINT_PREFIX}<org id>'",
                )
                continue
            receiver = self.resolve(dest.get("receiver"), f"{dpath}.receiver", "Organization", required=False)
            if receiver and _org_id(receiver[1]) != dend[len(ORG_ENDPOINT_PREFIX) :]:
                self.fail(
                    f"{dpath}.receiver", "consistency", "receiver must be the organisation of the endpoint"
                )
        return header, sender_org or "", sender[1] if sender else None

    def check_focus(self, header: Found | None, target: Found | None, rtype: str) -> None:
        if header is None or target is None:
            return
        hi, h = header
        focus = [_d(f).get("reference") for f in _l(h.get("focus"))]
        if self.full_url(target[0]) not in focus:
            self.fail(
                f"{self.at(hi)}.focus", "consistency", f"MessageHeader.focus must reference the {rtype}"
            )

    def check_organizations(self) -> None:
        for i, res in self.of_type("Organization"):
            base = self.at(i)
            if not _org_id(res):
                self.fail(f"{base}.identifier", "cardinality", f"an organisation id in {NS_ORG} is required")
            codes = [
                c for cc in _l(res.get("type")) for _, c in _codings(cc) if c.get("system") == CS_AGENCY_TYPE
            ]
            if not codes:
                self.fail(f"{base}.type", "cardinality", f"an agency type from {CS_AGENCY_TYPE} is required")
            for k, cc in enumerate(_l(res.get("type"))):
                self.our_codes(cc, f"{base}.type[{k}]", CS_AGENCY_TYPE)
        for i, res in self.of_type("PractitionerRole"):
            self.resolve(res.get("organization"), f"{self.at(i)}.organization", "Organization")

    def check_patient(self, patient: Found | None, *, demographics: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"pseudonym": ""}
        if patient is None:
            return out
        pi, p = patient
        base = self.at(pi)
        for k, ident in enumerate(_l(p.get("identifier"))):
            ident = _d(ident)
            system, value = _s(ident.get("system")), _s(ident.get("value"))
            if system == NS_PSEUDONYM:
                if out["pseudonym"]:
                    self.fail(f"{base}.identifier[{k}]", "cardinality", "only one pseudonymous identifier")
                out["pseudonym"] = value
            elif system == NS_NATIONAL_ID:
                if not national_id_valid(value):
                    self.fail(
                        f"{base}.identifier[{k}].value",
                        "identifier-format",
                        "not a valid resident identity number (18 characters, check digit)",
                    )
            elif system != NS_STUDENT_ID:
                self.fail(
                    f"{base}.identifier[{k}].system",
                    "identifier-system",
                    f"identifier system must be one of {NS_PSEUDONYM}, {NS_NATIONAL_ID}, {NS_STUDENT_ID}",
                )
        if not out["pseudonym"]:
            self.fail(
                f"{base}.identifier",
                "cardinality",
                f"a pseudonymous student identifier ({NS_PSEUDONYM}) is required",
            )
        if not demographics:
            return out
        birth = p.get("birthDate")
        if not isinstance(birth, str):
            self.fail(f"{base}.birthDate", "required", "birth year-month (YYYY-MM) is required")
        elif not _BIRTH_YM.match(birth):
            self.fail(
                f"{base}.birthDate",
                "birthdate-precision",
                "give the birth year and month only (YYYY-MM): the day is not needed",
            )
        elif (parse_instant(birth) or self.now) > self.now:
            self.fail(f"{base}.birthDate", "date-future", "birth date is in the future")
        else:
            out["birth"] = birth
        out["gender"] = self.code(p.get("gender"), f"{base}.gender", GENDERS, "gender")
        town_hit = _ext(p, SD_TOWN)
        if town_hit is None:
            self.fail(f"{base}.extension", "cardinality", f"the student's town ({SD_TOWN}) is required")
        else:
            town = _s(_ext_value(p, SD_TOWN))
            if not self.t.has(CS_TOWN, town):
                self.fail(
                    f"{base}.extension[{town_hit[0]}].valueCode",
                    "code-unknown",
                    f"{town!r} is not a town of {CS_TOWN}",
                )
            else:
                out["town"] = town
        school = _ext(p, SD_SCHOOL)
        if school is not None:
            if not _s(school[1].get("valueCode")):
                self.fail(
                    f"{base}.extension[{school[0]}].valueCode",
                    "required",
                    "school is an organisation id (valueCode)",
                )
            out["school"] = _s(school[1].get("valueCode")) or None
        grade = _ext(p, SD_GRADE)
        if grade is not None:
            if not _s(grade[1].get("valueString")):
                self.fail(f"{base}.extension[{grade[0]}].valueString", "required", "grade is a valueString")
            out["grade"] = _s(grade[1].get("valueString")) or None
        return out

    def check_related_persons(self, patient: Found | None) -> None:
        vs = self.t.value_set(VS_GUARDIAN)
        for i, res in self.of_type("RelatedPerson"):
            base = self.at(i)
            self.subject(res, "patient", base, patient)
            if not any(
                vs.has(c.get("system"), c.get("code"))
                for cc in _l(res.get("relationship"))
                for _, c in _codings(cc)
            ):
                self.fail(
                    f"{base}.relationship",
                    "code-unknown",
                    f"a guardian relationship from {VS_GUARDIAN} is required",
                )

    def check_consents(self, patient: Found | None) -> list[ConsentSummary]:
        summaries: list[ConsentSummary] = []
        vs = self.t.value_set(VS_GUARDIAN)
        for i, res in self.of_type("Consent"):
            base = self.at(i)
            before = len(self.issues)
            status = self.code(res.get("status"), f"{base}.status", CONSENT_STATUS, "Consent.status")
            self.subject(res, "patient", base, patient)
            if "policyRule" in res:
                codes = self.our_codes(res["policyRule"], f"{base}.policyRule", CS_LEGAL_BASIS)
                if codes and codes != ["consent"]:
                    self.fail(
                        f"{base}.policyRule", "consistency", "a Consent's policyRule can only be 'consent'"
                    )
            guardian = student = False
            for k, perf in enumerate(_l(res.get("performer"))):
                hit = self.resolve(perf, f"{base}.performer[{k}]", "RelatedPerson", "Patient")
                if hit is None:
                    continue
                if hit[1].get("resourceType") == "Patient":
                    student = True
                    if patient is not None and hit[0] != patient[0]:
                        self.fail(
                            f"{base}.performer[{k}]",
                            "consistency",
                            "must reference the Patient of this referral",
                        )
                elif any(
                    vs.has(c.get("system"), c.get("code"))
                    for cc in _l(hit[1].get("relationship"))
                    for _, c in _codings(cc)
                ):
                    guardian = True
                else:
                    self.fail(
                        f"{base}.performer[{k}]",
                        "consent-grantor",
                        "a RelatedPerson grantor must be a guardian",
                    )
            if not _l(res.get("performer")):
                self.fail(
                    f"{base}.performer",
                    "consent-grantor",
                    "who consented is required: the guardian (RelatedPerson), the student (Patient) or both",
                )
            assent_value = _ext_value(res, SD_STUDENT_ASSENT)
            if assent_value is not None and not isinstance(assent_value, bool):
                self.fail(f"{base}.extension", "required", "student-assent is a valueBoolean")
            prov = _d(res.get("provision"))
            ppath = f"{base}.provision"
            if not prov:
                self.fail(
                    ppath, "required", "a provision scoping recipients, purposes, data categories and period"
                )
            if prov and prov.get("type") != "permit":
                self.fail(f"{ppath}.type", "consent-provision", "the provision must be of type 'permit'")
            if "provision" in prov:
                self.fail(
                    f"{ppath}.provision",
                    "consent-provision",
                    "nested provisions are not supported: send one Consent per scope",
                )
            period = _d(prov.get("period"))
            start = parse_instant(period.get("start"))
            end = parse_instant(period.get("end"), end=True)
            if prov and start is None:
                self.fail(f"{ppath}.period.start", "required", "the consent's start is required")
            if start and end and end <= start:
                self.fail(f"{ppath}.period", "period", "the consent ends before it starts")
            recipients: list[str] = []
            for k, actor in enumerate(_l(prov.get("actor"))):
                actor = _d(actor)
                apath = f"{ppath}.actor[{k}]"
                if not any(
                    c.get("system") == V3_PARTICIPATION and c.get("code") == "IRCP"
                    for _, c in _codings(actor.get("role"))
                ):
                    self.fail(
                        f"{apath}.role",
                        "consent-actor",
                        "the actor role must be IRCP (information recipient)",
                    )
                ref = _d(actor.get("reference"))
                ident = _d(ref.get("identifier"))
                if ident:
                    system, value = _s(ident.get("system")), _s(ident.get("value"))
                    if (system == CS_AGENCY_TYPE and self.t.has(system, value)) or (
                        system == NS_ORG and value
                    ):
                        recipients.append(value)
                    else:
                        self.fail(
                            f"{apath}.reference.identifier",
                            "consent-actor",
                            f"a recipient is an agency type ({CS_AGENCY_TYPE}) or an org id ({NS_ORG})",
                        )
                else:
                    org = self.resolve(ref, f"{apath}.reference", "Organization")
                    if org and _org_id(org[1]):
                        recipients.append(str(_org_id(org[1])))
            if prov and not _l(prov.get("actor")):
                self.fail(
                    f"{ppath}.actor",
                    "cardinality",
                    "at least one recipient (actor with role IRCP) is required",
                )
            purposes = (
                self.coding_list(prov.get("purpose"), f"{ppath}.purpose", CS_PURPOSE, "purpose")
                if prov
                else []
            )
            categories = (
                self.coding_list(prov.get("class"), f"{ppath}.class", CS_DATA_CATEGORY, "data category")
                if prov
                else []
            )
            if len(self.issues) == before and status:
                summaries.append(
                    ConsentSummary(
                        consent_id=_s(res.get("id")) or self.full_url(i),
                        status=status,
                        grantor="both" if guardian and student else ("guardian" if guardian else "student"),
                        recipients=recipients,
                        categories=categories,
                        purposes=purposes,
                        start=start,
                        end=end,
                        student_assent=student or assent_value is True,
                    )
                )
        return summaries

    def check_results(self, patient: Found | None) -> list[scoring.ScaleResult]:
        results: list[scoring.ScaleResult] = []
        for i, res in self.of_type("Observation"):
            base = self.at(i)
            self.subject(res, "subject", base, patient)
            self.code(res.get("status"), f"{base}.status", OBSERVATION_STATUS, "Observation.status")
            spec = scoring.scale_of_observation(res)
            if spec is not None:
                result, problems = scoring.read_observation(res, spec)
                for rel, rule, message in problems:
                    self.fail(f"{base}.{rel}" if rel else base, rule, message)
                if not problems:
                    results.append(result)
                continue
            cats = [
                c
                for cc in _l(res.get("category"))
                for _, c in _codings(cc)
                if c.get("system") == CS_DATA_CATEGORY
            ]
            if not cats:
                self.fail(
                    f"{base}.category",
                    "observation-category",
                    f"an Observation that is not a scale result needs a category from {CS_DATA_CATEGORY}",
                )
            for k, cc in enumerate(_l(res.get("category"))):
                self.our_codes(cc, f"{base}.category[{k}]", CS_DATA_CATEGORY)
        for i, res in self.of_type("QuestionnaireResponse"):
            base = self.at(i)
            self.subject(res, "subject", base, patient)
            self.code(res.get("status"), f"{base}.status", QR_STATUS, "QuestionnaireResponse.status")
            spec = scoring.scale_of_questionnaire(_s(res.get("questionnaire")))
            if spec is None:
                self.fail(
                    f"{base}.questionnaire",
                    "questionnaire-unsupported",
                    "only PHQ-9 (http://loinc.org/q/44249-1) and GAD-7 (http://loinc.org/q/69737-5) "
                    "responses are accepted; send other scales as Observations",
                )
                continue
            result, problems = scoring.read_questionnaire_response(res, spec)
            for rel, rule, message in problems:
                self.fail(f"{base}.{rel}" if rel else base, rule, message)
            if not problems:
                results.append(result)
        for i, res in self.of_type("Condition"):
            base = self.at(i)
            self.subject(res, "subject", base, patient)
            if not _d(res.get("code")):
                self.fail(f"{base}.code", "required", "a Condition needs a code (the diagnosis)")
        for i, res in self.of_type("Communication"):
            base = self.at(i)
            self.subject(res, "subject", base, patient, required=False)
            self.code(res.get("status"), f"{base}.status", COMMUNICATION_STATUS, "Communication.status")
            for k, cc in enumerate(_l(res.get("category"))):
                self.our_codes(cc, f"{base}.category[{k}]", CS_DATA_CATEGORY)
        return results

    def finish(self) -> list[Issue]:
        seen: set[tuple[str, str]] = set()
        out: list[Issue] = []
        for issue in self.issues:
            if (issue.path, issue.rule) not in seen:
                seen.add((issue.path, issue.rule))
                out.append(issue)
        return out


# --- one function per event ----------------------------------------------------------------------------


def _referral(
    c: _Checker, header: Found | None, sender_org: str, sender: Mapping[str, Any] | None
) -> ValidatedReferral | None:
    task = c.one("Task")
    service_request = c.one("ServiceRequest")
    patient = c.one("Patient")
    c.check_focus(header, task, "Task")
    sender_type = _org_type(sender) if sender else None
    if sender is not None and sender_type not in AGENCY_TYPES:
        c.fail(
            "$.entry",
            "code-unknown",
            f"sender organisation has no known agency-type code (got {sender_type!r})",
        )
    authored: datetime | None = None
    if task:
        ti, t = task
        base = c.at(ti)
        if service_request and not c.refers_to(t.get("focus"), service_request):
            c.resolve(t.get("focus"), f"{base}.focus", "ServiceRequest")
            c.fail(f"{base}.focus", "consistency", "Task.focus must reference the ServiceRequest")
        c.subject(t, "for", base, patient)
        if t.get("status") != "requested":
            c.fail(f"{base}.status", "state", "a new referral's Task.status must be 'requested'")
        c.code(t.get("intent"), f"{base}.intent", TASK_INTENT, "Task.intent")
        authored = parse_instant(t.get("authoredOn"))
        if authored is None:
            c.fail(f"{base}.authoredOn", "required", "when the referral was made (authoredOn) is required")
        elif authored > c.now + timedelta(minutes=5):
            c.fail(f"{base}.authoredOn", "date-future", "authoredOn is in the future")
            authored = None
        requester = c.resolve(t.get("requester"), f"{base}.requester", "Organization", "PractitionerRole")
        if requester and sender_org:
            org = requester[1]
            if org.get("resourceType") == "PractitionerRole":
                hit = c.by_ref.get(_s(_d(org.get("organization")).get("reference")))
                org = hit[1] if hit else {}
            if _org_id(org) != sender_org:
                c.fail(
                    f"{base}.requester", "consistency", "the requester must belong to the sender organisation"
                )
    risk: int | None = None
    reasons: list[str] = []
    priority = "routine"
    basis: str | None = None
    if service_request:
        si, sr = service_request
        base = c.at(si)
        c.subject(sr, "subject", base, patient)
        if sr.get("status") != "active":
            c.fail(f"{base}.status", "state", "a new referral's ServiceRequest.status must be 'active'")
        c.code(sr.get("intent"), f"{base}.intent", REQUEST_INTENT, "ServiceRequest.intent")
        priority = (
            c.code(sr.get("priority", "routine"), f"{base}.priority", PRIORITIES, "priority") or "routine"
        )
        for k, cc in enumerate(_l(sr.get("reasonCode"))):
            reasons.extend(c.our_codes(cc, f"{base}.reasonCode[{k}]", CS_REASON))
        if not any(
            cd.get("system") == CS_REASON for cc in _l(sr.get("reasonCode")) for _, cd in _codings(cc)
        ):
            c.fail(f"{base}.reasonCode", "cardinality", f"at least one referral reason from {CS_REASON}")
        c.our_codes(sr.get("code"), f"{base}.code", CS_REASON)
        risk_hit = _ext(sr, SD_RISK)
        risk_coding = _d(_ext_value(sr, SD_RISK))
        if risk_hit is None:
            c.fail(f"{base}.extension", "cardinality", f"the risk level ({SD_RISK}) is required")
        elif risk_coding.get("system") != CS_RISK or not c.t.has(CS_RISK, _s(risk_coding.get("code"))):
            c.fail(
                f"{base}.extension[{risk_hit[0]}].valueCoding",
                "code-unknown",
                f"risk level must be a code 1-4 of {CS_RISK}",
            )
        else:
            risk = int(risk_coding["code"])
            wanted = c.t.system(CS_RISK).concepts[str(risk)].properties["priority"]
            if priority in PRIORITIES and PRIORITIES.index(priority) < PRIORITIES.index(wanted):
                c.fail(
                    f"{base}.priority",
                    "priority-risk",
                    f"risk level {risk} needs priority '{wanted}' or higher, not '{priority}'",
                )
        basis_hit = _ext(sr, SD_LEGAL_BASIS)
        if basis_hit is not None:
            coding = _d(_ext_value(sr, SD_LEGAL_BASIS))
            if coding.get("system") != CS_LEGAL_BASIS or not c.t.has(CS_LEGAL_BASIS, _s(coding.get("code"))):
                c.fail(
                    f"{base}.extension[{basis_hit[0]}].valueCoding",
                    "code-unknown",
                    f"legal basis must be a code of {CS_LEGAL_BASIS}",
                )
            else:
                basis = str(coding["code"])
        if basis == "emergency" and not _s(_ext_value(sr, SD_EMERGENCY_REASON)).strip():
            c.fail(
                f"{base}.extension",
                "emergency-reason-required",
                f"an emergency (break-glass) referral needs its reason ({SD_EMERGENCY_REASON})",
            )
        for k, perf in enumerate(_l(sr.get("performer"))):
            c.resolve(perf, f"{base}.performer[{k}]", "Organization", "PractitionerRole")
        if task:
            tprio = task[1].get("priority")
            if tprio is not None and tprio != sr.get("priority", "routine"):
                c.fail(
                    f"{c.at(task[0])}.priority",
                    "consistency",
                    "Task.priority must equal ServiceRequest.priority",
                )
    demo = c.check_patient(patient, demographics=True)
    c.check_related_persons(patient)
    consents = _qualified(c.check_consents(patient), demo["pseudonym"])
    results = c.check_results(patient)
    if basis is None and c.of_type("Consent"):
        basis = "consent"
    requested: str | None = None
    if header:
        for dest in _l(header[1].get("destination")):
            endpoint = _s(_d(dest).get("endpoint"))
            if endpoint.startswith(ORG_ENDPOINT_PREFIX):
                requested = endpoint[len(ORG_ENDPOINT_PREFIX) :]
                break
    if c.issues or header is None or sender_type is None:
        return None
    suggested = scoring.suggest_risk(results, reasons)
    at = authored or c.now
    facts = ReferralFacts(
        source_org=sender_org,
        source_type=AgencyType(sender_type),
        reasons=reasons,
        risk_level=RiskLevel(risk or 1),
        priority=priority,
        age=age_at(demo.get("birth"), at),
        gender=demo.get("gender"),
        town=demo.get("town"),
        school=demo.get("school"),
        grade=demo.get("grade"),
        requested_recipient=requested,
        consents=consents,
        legal_basis_claimed=basis,
        suggested_risk_level=RiskLevel(suggested) if suggested else None,
        safety_assessment_due=any(r.safety_assessment_due for r in results),
    )
    return ValidatedReferral(
        message_id=_s(header[1].get("id")) or _s(c.data.get("id")),
        event="referral-request",
        sender_org=sender_org,
        student_pseudonym=demo["pseudonym"],
        facts=facts,
        bundle=dict(c.data),
        scores=tuple(results),
        authored_at=authored,
    )


def _status(c: _Checker, header: Found | None, sender_org: str) -> StatusUpdate | None:
    task = c.one("Task")
    c.check_focus(header, task, "Task")
    patient = c.one("Patient", required=False)
    if patient:
        c.check_patient(patient, demographics=False)
    referral_id = status = ""
    business: str | None = None
    reason: str | None = None
    if task:
        ti, t = task
        base = c.at(ti)
        if not _s(t.get("id")):
            c.fail(f"{base}.id", "required", "Task.id (the hub's task id of the delivery) is required")
        referral_id = next(
            (_s(_d(x).get("value")) for x in _l(t.get("identifier")) if _d(x).get("system") == NS_REFERRAL),
            "",
        )
        if not referral_id:
            c.fail(f"{base}.identifier", "cardinality", f"the hub's referral id ({NS_REFERRAL}) is required")
        status = c.code(t.get("status"), f"{base}.status", TASK_STATUS, "Task.status") or ""
        codes = c.our_codes(t.get("businessStatus"), f"{base}.businessStatus", CS_BUSINESS_STATUS)
        business = codes[0] if codes else None
        sr = _d(t.get("statusReason"))
        reason = _s(sr.get("text")) or next((_s(cd.get("code")) for _, cd in _codings(sr)), "") or None
        if status in REASON_REQUIRED and not reason:
            c.fail(
                f"{base}.statusReason", "reason-required", f"moving a referral to '{status}' needs a reason"
            )
        if patient:
            c.subject(t, "for", base, patient, required=False)
    c.check_results(patient)
    if c.issues or header is None or task is None:
        return None
    return StatusUpdate(
        message_id=_s(header[1].get("id")) or _s(c.data.get("id")),
        event="referral-status",
        sender_org=sender_org,
        referral_id=referral_id,
        task_id=_s(task[1].get("id")),
        status=status,
        business_status=business,
        reason=reason,
        bundle=dict(c.data),
    )


def _feedback(c: _Checker, header: Found | None, sender_org: str) -> FeedbackMessage | None:
    comm = c.one("Communication")
    patient = c.one("Patient")
    task = c.one("Task", required=False)
    c.check_focus(header, comm, "Communication")
    demo = c.check_patient(patient, demographics=False)
    c.check_related_persons(patient)
    c.check_results(patient)
    referral_id = ""
    recipients: list[str] = []
    categories: list[str] = []
    if comm:
        ci, cm = comm
        base = c.at(ci)
        c.subject(cm, "subject", base, patient)
        referral_id = next(
            (
                _s(_d(_d(x).get("identifier")).get("value"))
                for x in _l(cm.get("basedOn"))
                if _d(_d(x).get("identifier")).get("system") == NS_REFERRAL
            ),
            "",
        )
        if not referral_id:
            c.fail(
                f"{base}.basedOn",
                "cardinality",
                f"the referral the feedback answers is required (basedOn.identifier in {NS_REFERRAL})",
            )
        if not _l(cm.get("payload")):
            c.fail(f"{base}.payload", "cardinality", "feedback needs at least one payload")
        categories = [
            _s(cd.get("code"))
            for cc in _l(cm.get("category"))
            for _, cd in _codings(cc)
            if cd.get("system") == CS_DATA_CATEGORY and c.t.has(CS_DATA_CATEGORY, cd.get("code"))
        ]
        sender = c.resolve(cm.get("sender"), f"{base}.sender", "Organization", "PractitionerRole")
        if sender and sender[1].get("resourceType") == "Organization" and _org_id(sender[1]) != sender_org:
            c.fail(f"{base}.sender", "consistency", "the feedback's sender must be the message's sender")
        for k, rcpt in enumerate(_l(cm.get("recipient"))):
            hit = c.resolve(rcpt, f"{base}.recipient[{k}]", "Organization")
            if hit and _org_id(hit[1]):
                recipients.append(str(_org_id(hit[1])))
        if not _l(cm.get("recipient")):
            c.fail(f"{base}.recipient", "cardinality", "the referrer the feedback goes to is required")
    task_status: str | None = None
    if task:
        task_status = c.code(task[1].get("status"), f"{c.at(task[0])}.status", TASK_STATUS, "Task.status")
    if c.issues or header is None or comm is None:
        return None
    return FeedbackMessage(
        message_id=_s(header[1].get("id")) or _s(c.data.get("id")),
        event="referral-feedback",
        sender_org=sender_org,
        referral_id=referral_id,
        student_pseudonym=demo["pseudonym"],
        recipients=tuple(recipients),
        categories=tuple(sorted(set(categories))),
        task_status=task_status,
        bundle=dict(c.data),
    )


def _qualified(consents: list[ConsentSummary], pseudonym: str) -> list[ConsentSummary]:
    """Consent ids are only unique per student (every school numbers its forms): qualify them."""
    return [
        c.model_copy(update={"consent_id": f"{pseudonym}/{c.consent_id}"}) if pseudonym else c
        for c in consents
    ]


def _consent_update(c: _Checker, header: Found | None, sender_org: str) -> ConsentUpdate | None:
    patient = c.one("Patient")
    consents = c.of_type("Consent")
    if not consents:
        c.fail("$.entry", "cardinality", "a consent-update carries at least one Consent")
    if header and consents:
        focus = {_d(f).get("reference") for f in _l(header[1].get("focus"))}
        if not any(c.full_url(i) in focus for i, _ in consents):
            c.fail(
                f"{c.at(header[0])}.focus", "consistency", "MessageHeader.focus must reference the Consent"
            )
    demo = c.check_patient(patient, demographics=False)
    c.check_related_persons(patient)
    summaries = _qualified(c.check_consents(patient), demo["pseudonym"])
    if c.issues or header is None:
        return None
    return ConsentUpdate(
        message_id=_s(header[1].get("id")) or _s(c.data.get("id")),
        event="consent-update",
        sender_org=sender_org,
        student_pseudonym=demo["pseudonym"],
        consents=tuple(summaries),
        bundle=dict(c.data),
    )


def _under(path: str, structural: list[Issue]) -> bool:
    """A profile issue at (or inside) a path fhir.resources already rejected only repeats it."""
    return any(path == s.path or path.startswith((s.path + ".", s.path + "[")) for s in structural)


def _validate(
    data: Mapping[str, Any], size: int | None, now: datetime | None, expect: str | None
) -> ValidatedMessage:
    if size is not None and size > MAX_BUNDLE_BYTES:
        raise ProfileError(
            [Issue("$", "size-limit", f"Bundle is {size} bytes; the limit is {MAX_BUNDLE_BYTES}")]
        )
    if not isinstance(data, Mapping) or data.get("resourceType") != "Bundle":
        raise ProfileError([Issue("$.resourceType", "resource-type", "a FHIR Bundle is required")])
    structural = _structural_issues(data)
    c = _Checker(data, now or datetime.now(UTC))
    result: ValidatedMessage | None = None
    try:
        c.check_bundle()
        header, sender_org, sender = c.check_header(expect)
        c.check_organizations()
        event = _s(_d(header[1].get("eventCoding")).get("code")) if header else ""
        if expect is not None and event != expect:
            event = ""  # reported by check_header; checking the wrong message shape only adds noise
        if event == "referral-request":
            result = _referral(c, header, sender_org, sender)
        elif event == "referral-status":
            result = _status(c, header, sender_org)
        elif event == "referral-feedback":
            result = _feedback(c, header, sender_org)
        elif event == "consent-update":
            result = _consent_update(c, header, sender_org)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError):
        # The profile pass reads raw dicts defensively; if a structurally broken Bundle still trips
        # it, the structural issues already say what is wrong.
        if not structural:
            raise
    issues = structural + [i for i in c.finish() if not _under(i.path, structural)]
    if issues or result is None:
        raise ProfileError(issues or [Issue("$.entry", "cardinality", "a MessageHeader is required")])
    return result


def validate_referral(
    data: Mapping[str, Any], *, size: int | None = None, now: datetime | None = None
) -> ValidatedReferral:
    """Validate a referral-request message Bundle; raise ``ProfileError`` with every issue found."""
    result = _validate(data, size, now, "referral-request")
    assert isinstance(result, ValidatedReferral)
    return result


def validate_message(
    data: Mapping[str, Any], *, size: int | None = None, now: datetime | None = None
) -> ValidatedMessage:
    """Validate any Qixin message Bundle (the event picks the rules); raise ``ProfileError``."""
    return _validate(data, size, now, None)
