"""Session fixtures: one real Kafka broker and one real PostgreSQL for the whole run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import kafka_bootstrap, postgres_url


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    with kafka_bootstrap() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    with postgres_url() as url:
        yield url
