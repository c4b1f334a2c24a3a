"""Qixin test suite: unit (pure), integration (real Kafka and PostgreSQL), e2e (processes + browser)."""
