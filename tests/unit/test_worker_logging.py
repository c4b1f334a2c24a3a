"""The worker's logging: the root logger keeps the configured level (no terminal spinner)."""

from __future__ import annotations

import logging

import faust
import pytest

from hub.cli.run import make_worker


@pytest.fixture
def root() -> logging.Logger:
    logger = logging.Logger("root-under-test")
    logger.addHandler(logging.StreamHandler())
    logger.setLevel(logging.WARNING)
    return logger


def test_the_worker_leaves_the_root_logger_at_its_level(root: logging.Logger) -> None:
    worker = make_worker(faust.App("qixin-logging-test", broker="kafka://127.0.0.1:1"), "warn")

    worker.on_setup_root_logger(root, logging.WARNING)  # what faust calls while it configures logging

    assert root.level == logging.WARNING
    assert not root.isEnabledFor(logging.DEBUG)  # a debug call returns before building a record
    assert [type(h) for h in root.handlers] == [logging.StreamHandler]


def test_faust_s_own_worker_would_turn_debug_on(root: logging.Logger) -> None:
    # Why make_worker drops the spinner: faust's default sets the root logger to DEBUG.
    worker = faust.Worker(faust.App("qixin-logging-test-2", broker="kafka://127.0.0.1:1"), loglevel="warn")

    worker.on_setup_root_logger(root, logging.WARNING)

    assert root.level == logging.DEBUG
