"""Canonical URLs of the Qixin FHIR profile: code systems, extensions and naming systems."""

from __future__ import annotations

BASE = "https://qixin.example.org/fhir"


def cs_url(name: str) -> str:
    """The canonical URL of one of our code systems, e.g. ``cs_url("agency-type")``."""
    return f"{BASE}/CodeSystem/{name}"


def vs_url(name: str) -> str:
    return f"{BASE}/ValueSet/{name}"


CS_MESSAGE_EVENT = cs_url("message-event")
CS_AGENCY_TYPE = cs_url("agency-type")
CS_REASON = cs_url("referral-reason")
CS_RISK = cs_url("risk-level")
CS_DATA_CATEGORY = cs_url("data-category")
CS_PURPOSE = cs_url("purpose")
CS_LEGAL_BASIS = cs_url("legal-basis")
CS_BUSINESS_STATUS = cs_url("business-status")
CS_TOWN = cs_url("town")
VS_GUARDIAN = vs_url("guardian-relationship")
VS_SCALE = vs_url("scale")

SD_RISK = f"{BASE}/StructureDefinition/risk-level"
SD_TOWN = f"{BASE}/StructureDefinition/town"
SD_SCHOOL = f"{BASE}/StructureDefinition/school"
SD_GRADE = f"{BASE}/StructureDefinition/grade"
SD_LEGAL_BASIS = f"{BASE}/StructureDefinition/legal-basis"
SD_EMERGENCY_REASON = f"{BASE}/StructureDefinition/emergency-reason"
SD_STUDENT_ASSENT = f"{BASE}/StructureDefinition/student-assent"

NS_PSEUDONYM = f"{BASE}/NamingSystem/student-pseudonym"
NS_NATIONAL_ID = f"{BASE}/NamingSystem/national-id"
NS_STUDENT_ID = f"{BASE}/NamingSystem/student-id"
NS_ORG = f"{BASE}/NamingSystem/org"
NS_REFERRAL = f"{BASE}/NamingSystem/referral"

ORG_ENDPOINT_PREFIX = "urn:qixin:org:"
