"""Named example messages for OpenAPI, loaded from the sample Bundles in ``schemas/samples``.

``EXAMPLES`` (referral-request samples, name → Bundle) and ``MESSAGE_EXAMPLES`` (the other events) are
read on first access, not at import; ``openapi_examples()`` gives FastAPI's ``openapi_examples`` shape.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parent / "samples"

SUMMARIES: dict[str, tuple[str, str]] = {
    "referral-school-camhs-high": (
        "学校→门诊，高危，监护人同意",
        "School → CAMHS, high risk, guardian consent",
    ),
    "referral-hotline-crisis-camhs": (
        "知心365热线→门诊，危机，紧急依据",
        "Hotline → CAMHS, crisis, emergency basis",
    ),
    "referral-school-police-mandatory-report": (
        "学校→公安，疑似侵害，强制报告",
        "School → police, suspected abuse, mandatory report",
    ),
    "referral-school-street-centre-elevated": (
        "学校→街镇中心，重点关注",
        "School → street centre, elevated risk",
    ),
    "referral-police-case-support-district-centre": (
        "公安→区中心，涉案心理支持",
        "Police → district centre, case support",
    ),
    "referral-camhs-discharge-school": ("门诊→学校，出院返校", "CAMHS → school, post-discharge return"),
    "referral-civil-affairs-welfare-street-centre": (
        "民政→街镇中心，关爱随访",
        "Civil affairs → street centre, welfare follow-up",
    ),
    "status-camhs-accepted": ("状态更新：门诊接收并预约", "Status: CAMHS accepted, appointment booked"),
    "feedback-camhs-school": ("反馈：门诊→学校", "Feedback: CAMHS → school"),
    "consent-update-revoked": ("同意撤回", "Consent revoked"),
}


def _read(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


@lru_cache(maxsize=1)
def referral_examples() -> dict[str, dict[str, Any]]:
    """referral-request samples, one per pathway: name → Bundle."""
    return _read(SAMPLES)


@lru_cache(maxsize=1)
def message_examples() -> dict[str, dict[str, Any]]:
    """referral-status, referral-feedback and consent-update samples: name → Bundle."""
    return _read(SAMPLES / "messages")


def openapi_examples(kind: str = "referral") -> dict[str, dict[str, Any]]:
    """``{name: {"summary", "value"}}`` for ``Body(openapi_examples=…)``; kind is referral or message."""
    source = referral_examples() if kind == "referral" else message_examples()
    return {
        name: {"summary": " / ".join(SUMMARIES.get(name, (name,))), "value": bundle}
        for name, bundle in source.items()
    }


def __getattr__(name: str) -> Any:
    if name == "EXAMPLES":
        return referral_examples()
    if name == "MESSAGE_EXAMPLES":
        return message_examples()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
