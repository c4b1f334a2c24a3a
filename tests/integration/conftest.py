"""A running hub (API and worker processes) per test module, isolated by topic prefix and database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.hub import RunningHub, make_hub
from tests.support.servers import scratch_hub_engine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub(kafka: str, postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    running = make_hub(Path(tmp_path_factory.mktemp("hub")), kafka, postgres)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A fresh read model with the hub's schema, on PostgreSQL and on the embedded SQLite default."""
    from hub.adapters.db import create_schema, make_engine

    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
        create_schema(engine)
        yield engine
        engine.dispose()
        return
    with scratch_hub_engine(request.getfixturevalue("postgres"), f"rm{uuid.uuid4().hex[:8]}") as engine:
        yield engine
