"""The disclosure policy the router consults: consent, statute or emergency decides each view."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from hub.domain.consent import Disclosure, Recipient, decide
from hub.domain.disclosure import Content, categorise
from hub.services.port import PlannedRoute
from hub.services.routing import DisclosureOutcome
from schemas.envelope import ConsentSummary, ReferralSubmitted


class ConsentLookup(Protocol):
    def current(self, consents: Sequence[ConsentSummary], at: datetime) -> Sequence[ConsentSummary]:
        """The referral's consents with the statuses recorded since (revocations included)."""

    def current_many(
        self, groups: Sequence[Sequence[ConsentSummary]], at: datetime
    ) -> Sequence[Sequence[ConsentSummary]]:
        """``current`` for several referrals at once."""


class ConsentDisclosure:
    def __init__(self, policy: Any, consents: ConsentLookup | None = None) -> None:
        self._policy = policy
        self._consents = consents
        self._last: tuple[int, Content] | None = None

    def _content(self, bundle: dict[str, Any]) -> Content:
        # One referral fans out to several routes with the same Bundle: categorise it once.
        if self._last is None or self._last[0] != id(bundle):
            self._last = (id(bundle), categorise(bundle, self._policy))
        return self._last[1]

    def current_consents(
        self, events: Sequence[ReferralSubmitted], now: datetime
    ) -> list[Sequence[ConsentSummary] | None]:
        """Each referral's consents as they stand now, looked up once for a batch."""
        if self._consents is None:
            return [None] * len(events)
        return list(self._consents.current_many([e.facts.consents for e in events], now))

    def decide(
        self,
        bundle: dict[str, Any],
        event: ReferralSubmitted,
        route: PlannedRoute,
        now: datetime,
        consents: Sequence[ConsentSummary] | None = None,
    ) -> DisclosureOutcome:
        """``consents``: the referral's current consents when the caller looked them up already."""
        current = consents
        if current is None and self._consents is not None:
            current = self._consents.current(event.facts.consents, now)
        content = self._content(bundle)
        fallback_reason = None
        if route.legal_basis == "emergency" and not content.emergency_reason:
            # A crisis rule routes on the emergency basis; when the sender gave no reason the rule's
            # own justification stands in (break-glass still needs a supervisor's review afterwards).
            fallback_reason = f"routing rule {route.rule_id}: imminent risk"
        decision = decide(
            event.facts,
            content,
            recipient=Recipient(route.recipient_org, route.recipient_type),
            purpose=route.purpose,
            basis=route.legal_basis,
            at=now,
            consents=current,
            categories=route.categories or None,
            reason=fallback_reason,
        )
        if isinstance(decision, Disclosure):
            return DisclosureOutcome(
                allowed=True,
                view=decision.view,
                categories=tuple(sorted(decision.disclosed)),
                consent_ids=decision.consent_ids,
                basis=decision.basis,
                review_required=decision.review_required,
                expires_at=decision.expires_at,
            )
        return DisclosureOutcome(
            allowed=False, basis=route.legal_basis, reason_code=decision.reason_code, reason=decision.message
        )
