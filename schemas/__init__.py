"""FHIR R4B referral profile, code systems and the compact internal message models (no I/O)."""
