"""The pipeline benchmark's rate sweep: the rates it accepts and the knee it reports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_pipeline.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pipeline_under_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def phase(rate: float, p99: float | None, not_visible: int = 0) -> dict[str, Any]:
    return {"rate_per_s": rate, "post_to_inbox_ms": {"p99": p99}, "not_visible": not_visible}


def test_rates_are_sorted_and_deduplicated(bench: ModuleType) -> None:
    assert bench.parse_rates("100, 25,50,25") == [25.0, 50.0, 100.0]
    assert bench.parse_rates("") == []


@pytest.mark.parametrize(
    ("spec", "names"),
    [("25,fast", "'fast' is not a rate"), ("0,50", "'0' is outside"), ("-5", "'-5' is outside")],
)
def test_a_bad_rate_is_refused_by_its_text(bench: ModuleType, spec: str, names: str) -> None:
    with pytest.raises(SystemExit) as refused:
        bench.parse_rates(spec)
    assert "--sweep" in str(refused.value) and names in str(refused.value)


def test_the_knee_is_the_last_rate_before_the_first_miss(bench: ModuleType) -> None:
    # 100/s meets the target again after 75/s missed it: the knee stays at 50/s.
    sweep = [phase(100, 90.0), phase(25, 40.0), phase(75, 140.0), phase(50, 80.0)]
    assert bench.sweep_knee(sweep) == 50


def test_no_knee_when_the_lowest_rate_misses_or_loses_referrals(bench: ModuleType) -> None:
    assert bench.sweep_knee([phase(25, 120.0), phase(50, 90.0)]) is None
    assert bench.sweep_knee([phase(25, 40.0, not_visible=3)]) is None
    assert bench.sweep_knee([phase(25, None)]) is None
