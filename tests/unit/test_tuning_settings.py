"""Tuning settings: HUB_TUNE_GC (collector tuning off, to compare) and the routing linger."""

from __future__ import annotations

import gc

import pytest
from pydantic import ValidationError

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


def test_the_routing_linger_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUB_WORKER__ROUTE_LINGER_S", "0.02")

    assert Settings().worker.route_linger_s == 0.02


def test_a_negative_routing_linger_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_WORKER__ROUTE_LINGER_S", "-1")

    with pytest.raises(ValidationError, match="route_linger_s"):
        Settings()
