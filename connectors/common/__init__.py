"""Shared connector pieces: settings, FHIR builders, outbox, transports, reports."""
