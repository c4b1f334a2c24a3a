"""Shared connector pieces: settings, FHIR builders, outbox, transports, reports; pure mapping apart from I/O."""
