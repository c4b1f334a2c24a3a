"""Consent and disclosure decisions: may this recipient see this referral, for this purpose, on this basis?

``decide`` is the one entry point. It weighs the legal basis (consent, statutory duty, emergency) against
the consents, the student's age, the policy and the time, and returns either a ``Disclosure`` carrying
the minimised view or a ``Refusal`` with a stable reason code. No basis, no disclosure.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hub.domain.disclosure import Content, minimise
from hub.domain.error import HubError
from schemas.envelope import AGENCY_TYPES, ConsentSummary, ReferralFacts
from schemas.policy import DisclosurePolicy

BASES = ("consent", "statutory", "emergency")

# Refusal reason codes (stable: audit records and dashboards key on them).
NO_BASIS = "no-basis"
BASIS_UNKNOWN = "basis-unknown"
PURPOSE_UNKNOWN = "purpose-unknown"
RECIPIENT_TYPE_UNKNOWN = "recipient-type-unknown"
PURPOSE_NOT_PERMITTED = "purpose-not-permitted-for-recipient"
NO_CONSENT = "no-consent"
RECIPIENT_NOT_COVERED = "recipient-not-covered"
PURPOSE_NOT_COVERED = "purpose-not-covered"
CONSENT_REVOKED = "consent-revoked"
CONSENT_NOT_ACTIVE = "consent-not-active"
CONSENT_NOT_YET_VALID = "consent-not-yet-valid"
CONSENT_EXPIRED = "consent-expired"
GUARDIAN_CONSENT_REQUIRED = "guardian-consent-required"
STUDENT_ASSENT_REQUIRED = "student-assent-required"
STUDENT_CONSENT_REQUIRED = "student-consent-required"
CATEGORIES_NOT_COVERED = "categories-not-covered"
STATUTORY_NOT_APPLICABLE = "statutory-not-applicable"
EMERGENCY_REASON_REQUIRED = "emergency-reason-required"
EMERGENCY_RISK_TOO_LOW = "emergency-risk-too-low"


@dataclass(frozen=True, slots=True)
class Recipient:
    org_id: str
    agency_type: str  # an AgencyType value


@dataclass(frozen=True)
class Disclosure:
    """What one recipient may see of a referral, why, and the minimised Bundle itself."""

    recipient: Recipient
    purpose: str
    basis: str
    categories: frozenset[str]  # allowed by the basis (∩ what was asked for)
    disclosed: frozenset[str]  # present in the view
    withheld: frozenset[str]  # asked for, or present in the referral, but not allowed
    view: dict[str, Any] = field(repr=False)
    decided_at: datetime
    policy_version: str
    consent_ids: tuple[str, ...] = ()
    duty: str | None = None  # statutory duty code
    review_required: bool = False  # break-glass: a supervisor reviews afterwards
    expires_at: datetime | None = None  # break-glass: access ends here
    inform_guardian: bool = False  # break-glass: tell the guardian afterwards
    deidentified: bool = False
    # Break-glass justification. Free text from the sender: seal it, never put it on a plain topic.
    reason: str | None = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        """JSON-ready decision record (no view, no free text): for audit events and the CLI."""
        return {
            "decision": "disclose",
            "recipient": {"org_id": self.recipient.org_id, "agency_type": self.recipient.agency_type},
            "purpose": self.purpose,
            "basis": self.basis,
            "categories": sorted(self.categories),
            "disclosed": sorted(self.disclosed),
            "withheld": sorted(self.withheld),
            "consent_ids": list(self.consent_ids),
            "duty": self.duty,
            "review_required": self.review_required,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "inform_guardian": self.inform_guardian,
            "deidentified": self.deidentified,
            "decided_at": self.decided_at.isoformat(),
            "policy_version": self.policy_version,
        }


@dataclass(frozen=True)
class Refusal:
    """No disclosure, and the stable reason why."""

    reason_code: str
    message: str
    recipient: Recipient | None = None
    purpose: str | None = None
    basis: str | None = None
    decided_at: datetime | None = None
    policy_version: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "decision": "refuse",
            "reason_code": self.reason_code,
            "message": self.message,
            "recipient": (
                {"org_id": self.recipient.org_id, "agency_type": self.recipient.agency_type}
                if self.recipient
                else None
            ),
            "purpose": self.purpose,
            "basis": self.basis,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "policy_version": self.policy_version,
        }

    def error(self) -> HubError:
        """The refusal as a HubError, for callers that must stop (403, stable code)."""
        return HubError(
            self.message, code="disclosure-refused", status=403, details=[{"reason_code": self.reason_code}]
        )


Decision = Disclosure | Refusal


@dataclass(frozen=True)
class _Grant:
    categories: frozenset[str]
    consent_ids: tuple[str, ...] = ()
    duty: str | None = None
    review_required: bool = False
    expires_at: datetime | None = None
    inform_guardian: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class _Denied:
    code: str
    message: str


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _names(recipients: Collection[str], recipient: Recipient) -> bool:
    """A policy list names agency types, or organisations as ``org:<id>``."""
    return recipient.agency_type in recipients or f"org:{recipient.org_id}" in recipients


def _check_consent(
    c: ConsentSummary,
    facts: ReferralFacts,
    recipient: Recipient,
    purpose: str,
    at: datetime,
    requested: frozenset[str] | None,
    policy: DisclosurePolicy,
) -> tuple[int, _Denied] | frozenset[str]:
    """The categories ``c`` allows here, or (stage, why not): a refusal reports the consent that got
    furthest through recipient → purpose → status → period → grantor → assent → categories."""
    if recipient.org_id not in c.recipients and recipient.agency_type not in c.recipients:
        return 0, _Denied(
            RECIPIENT_NOT_COVERED,
            f"consent {c.consent_id} does not name {recipient.org_id} "
            f"or its agency type {recipient.agency_type}",
        )
    if purpose not in c.purposes:
        return 1, _Denied(PURPOSE_NOT_COVERED, f"consent {c.consent_id} does not cover the purpose {purpose}")
    if c.status != "active":
        code = CONSENT_REVOKED if c.status == "inactive" else CONSENT_NOT_ACTIVE
        what = "was revoked" if c.status == "inactive" else f"is {c.status}, not active"
        return 2, _Denied(code, f"consent {c.consent_id} {what}")
    if c.start is not None and at < _aware(c.start):
        return 3, _Denied(CONSENT_NOT_YET_VALID, f"consent {c.consent_id} starts {c.start.isoformat()}")
    if c.end is not None and at >= _aware(c.end):
        return 3, _Denied(CONSENT_EXPIRED, f"consent {c.consent_id} expired {c.end.isoformat()}")
    age = facts.age
    ages = policy.consent
    if age is not None and age >= ages.adult_from:
        if c.grantor not in ("student", "both"):
            return 4, _Denied(
                STUDENT_CONSENT_REQUIRED,
                f"the student is {age}: their own consent is required, not only the guardian's",
            )
    else:
        if c.grantor not in ("guardian", "both"):
            who = "of unknown age" if age is None else f"{age}"
            return 4, _Denied(
                GUARDIAN_CONSENT_REQUIRED,
                f"the student is {who}: the guardian's consent is required (consent {c.consent_id})",
            )
        if (age is None or age >= ages.assent_from) and not (c.student_assent or c.grantor == "both"):
            return 5, _Denied(
                STUDENT_ASSENT_REQUIRED,
                f"the student is {ages.assent_from}-{ages.adult_from - 1}: their assent must be "
                f"recorded with the guardian's consent (consent {c.consent_id})",
            )
    allowed = frozenset(c.categories) & policy.categories
    if requested is not None:
        allowed &= requested
    if not allowed:
        return 6, _Denied(
            CATEGORIES_NOT_COVERED, f"consent {c.consent_id} covers none of the data categories asked for"
        )
    return allowed


def _by_consent(
    facts: ReferralFacts,
    consents: Sequence[ConsentSummary],
    recipient: Recipient,
    purpose: str,
    at: datetime,
    requested: frozenset[str] | None,
    policy: DisclosurePolicy,
) -> _Grant | _Denied:
    allowed: set[str] = set()
    used: list[str] = []
    best: tuple[int, _Denied] = (-1, _Denied(NO_CONSENT, "no consent record for this student"))
    for c in consents:
        outcome = _check_consent(c, facts, recipient, purpose, at, requested, policy)
        if isinstance(outcome, frozenset):
            allowed |= outcome
            used.append(c.consent_id)
        elif outcome[0] > best[0]:
            best = outcome
    if not used:
        return best[1]
    return _Grant(frozenset(allowed), consent_ids=tuple(used))


def _by_statute(
    facts: ReferralFacts, recipient: Recipient, purpose: str, policy: DisclosurePolicy
) -> _Grant | _Denied:
    duties = [d for d in policy.statutory.values() if _names(d.recipients, recipient)]
    if not duties:
        return _Denied(
            RECIPIENT_NOT_COVERED, f"no statutory duty names {recipient.agency_type} as a recipient"
        )
    duties = [d for d in duties if purpose in d.purposes]
    if not duties:
        return _Denied(
            PURPOSE_NOT_COVERED,
            f"no statutory duty towards {recipient.agency_type} has the purpose {purpose}",
        )
    reasons = set(facts.reasons)
    duties = [d for d in duties if not d.reasons or d.reasons & reasons]
    if not duties:
        return _Denied(
            STATUTORY_NOT_APPLICABLE,
            f"no statutory duty towards {recipient.agency_type} applies to the reasons {sorted(reasons)}",
        )
    duty = duties[0]
    return _Grant(duty.categories, duty=duty.code)


def _by_emergency(
    facts: ReferralFacts,
    content: Content,
    recipient: Recipient,
    purpose: str,
    at: datetime,
    reason: str | None,
) -> _Grant | _Denied:
    em = content.policy.emergency
    why = (reason if reason is not None else content.emergency_reason or "").strip()
    if em.reason_required and not why:
        return _Denied(EMERGENCY_REASON_REQUIRED, "break-glass access needs a stated reason")
    if not _names(em.recipients, recipient):
        return _Denied(
            RECIPIENT_NOT_COVERED, f"break-glass access does not extend to {recipient.agency_type}"
        )
    if purpose not in em.purposes:
        return _Denied(
            PURPOSE_NOT_COVERED, f"break-glass access is only for {', '.join(sorted(em.purposes))}"
        )
    if int(facts.risk_level) < em.min_risk_level:
        return _Denied(
            EMERGENCY_RISK_TOO_LOW,
            f"break-glass access needs risk level {em.min_risk_level} or higher, not {int(facts.risk_level)}",
        )
    return _Grant(
        em.categories,
        review_required=True,
        expires_at=at + em.max_duration,
        inform_guardian=not (set(facts.reasons) & em.no_guardian_notice_reasons),
        reason=why or None,
    )


def decide(
    facts: ReferralFacts,
    content: Content,
    *,
    recipient: Recipient,
    purpose: str,
    basis: str | None,
    at: datetime,
    consents: Sequence[ConsentSummary] | None = None,
    categories: Collection[str] | None = None,
    reason: str | None = None,
) -> Disclosure | Refusal:
    """Decide one disclosure of a referral to ``recipient`` for ``purpose`` on ``basis`` at ``at``.

    ``consents`` defaults to those in the referral (``facts.consents``); pass the current ones when
    consent-update messages have changed them. ``categories`` narrows what is asked for (e.g. by a
    routing rule); None asks for everything the basis allows. ``reason`` is the break-glass
    justification; by default the referral's emergency-reason extension.
    """
    policy = content.policy
    at = _aware(at)

    def refuse(code: str, message: str) -> Refusal:
        return Refusal(code, message, recipient, purpose, basis, at, policy.version)

    if recipient.agency_type not in AGENCY_TYPES:
        return refuse(RECIPIENT_TYPE_UNKNOWN, f"unknown agency type {recipient.agency_type!r}")
    if purpose not in policy.purposes:
        return refuse(PURPOSE_UNKNOWN, f"unknown purpose {purpose!r}")
    only = policy.recipient_purposes.get(recipient.agency_type)
    if only is not None and purpose not in only:
        return refuse(
            PURPOSE_NOT_PERMITTED,
            f"{recipient.agency_type} may receive data only for {', '.join(sorted(only))}",
        )
    if not basis:
        return refuse(NO_BASIS, "no legal basis, no disclosure")
    requested = frozenset(categories) if categories is not None else None
    grant: _Grant | _Denied
    if basis == "consent":
        grant = _by_consent(
            facts, facts.consents if consents is None else consents, recipient, purpose, at, requested, policy
        )
    elif basis == "statutory":
        grant = _by_statute(facts, recipient, purpose, policy)
    elif basis == "emergency":
        grant = _by_emergency(facts, content, recipient, purpose, at, reason)
    else:
        return refuse(BASIS_UNKNOWN, f"unknown legal basis {basis!r}; one of {', '.join(BASES)}")
    if isinstance(grant, _Denied):
        return refuse(grant.code, grant.message)
    allowed = grant.categories & policy.categories
    if requested is not None:
        allowed &= requested
    deid = policy.deidentified.get(purpose)
    if deid is not None:
        allowed -= deid.deny_categories
    if not allowed:
        return refuse(
            CATEGORIES_NOT_COVERED, f"the {basis} basis allows none of the data categories asked for"
        )
    view = minimise(
        content, allowed, deny_free_text=bool(deid and deid.deny_free_text), consent_ids=grant.consent_ids
    )
    return Disclosure(
        recipient=recipient,
        purpose=purpose,
        basis=basis,
        categories=allowed,
        disclosed=view.categories,
        withheld=(requested if requested is not None else content.categories) - allowed,
        view=view.bundle,
        decided_at=at,
        policy_version=policy.version,
        consent_ids=grant.consent_ids,
        duty=grant.duty,
        review_required=grant.review_required,
        expires_at=grant.expires_at,
        inform_guardian=grant.inform_guardian,
        deidentified=deid is not None,
        reason=grant.reason,
    )
