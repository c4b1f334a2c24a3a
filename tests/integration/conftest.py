"""A running hub (API and worker processes) per test module, isolated by topic prefix and database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import RunningHub, make_hub

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub(kafka: str, postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    running = make_hub(Path(tmp_path_factory.mktemp("hub")), kafka, postgres)
    try:
        yield running
    finally:
        running.stop_all()
