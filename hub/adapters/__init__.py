"""Adapters: Kafka producers, SQL repositories, key store, rules loader, FHIR mapping."""
