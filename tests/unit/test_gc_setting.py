"""HUB_TUNE_GC: the API's and the worker's collector tuning can be turned off to compare."""

from __future__ import annotations

import gc

import pytest

from hub.cli.heap import YOUNG_THRESHOLD, tune_gc
from hub.settings import Settings


def test_tuning_is_on_by_default() -> None:
    assert Settings().tune_gc is True


def test_hub_tune_gc_false_keeps_the_interpreter_s_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_TUNE_GC", "false")
    before = gc.get_threshold()

    tune_gc(Settings().tune_gc)

    assert gc.get_threshold() == before
    assert gc.get_threshold()[0] != YOUNG_THRESHOLD
