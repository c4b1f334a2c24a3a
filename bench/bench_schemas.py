"""Microseconds per operation at the edge and in the disclosure engine, on every sample referral.

Run: .venv/bin/python bench/bench_schemas.py [--seconds 0.3] [--repeats 5]

  fhir        fhir.resources ``Bundle.model_validate`` alone (structure and types)
  validate    edge validation: ``validate_referral`` = fhir.resources + the Qixin profile
  profile     the Qixin profile's own checks alone (validate with the fhir.resources step stubbed out)
  categorise  label every part of the Bundle with its data category (``categorise``)
  decide      the disclosure decision for the pathway's natural recipient, minimised view included
  minimise    the minimised view alone for the categories that decision allowed
Each figure is the fastest of ``--repeats`` runs of as many calls as fit in ``--seconds`` (the least
disturbed by other load on the machine; the median is recorded in the JSON as well).
Writes bench/results/schemas.json.

  --fhir-validators   instead: CPU per ``Bundle.model_validate`` of one sample with fhir_core's own
                      model validators and with schemas/fhirspeed.py's, in one process, alternating
                      ``--rounds`` times, ``--seconds`` of ``time.process_time()`` each; prints the
                      medians and writes bench/results/fhir_validators.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir.resources.R4B.bundle import Bundle  # noqa: E402

from hub.domain.consent import Disclosure, Recipient, decide  # noqa: E402
from hub.domain.disclosure import categorise, minimise  # noqa: E402
from schemas import fhirspeed, profile  # noqa: E402
from schemas.policy import default_disclosure_policy  # noqa: E402
from schemas.profile import validate_referral  # noqa: E402

SAMPLES = ROOT / "schemas" / "samples"
AT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)

# sample -> (recipient org, agency type, purpose, basis, categories asked for)
PATHWAYS: dict[str, tuple[str, str, str, str, list[str] | None]] = {
    "referral-school-camhs-high": ("camhs-songjiang-mhc", "camhs", "treatment", "consent", None),
    "referral-hotline-crisis-camhs": (
        "camhs-songjiang-mhc",
        "camhs",
        "crisis-intervention",
        "emergency",
        None,
    ),
    "referral-school-police-mandatory-report": (
        "police-songjiang",
        "police",
        "safeguarding",
        "statutory",
        None,
    ),
    "referral-school-street-centre-elevated": (
        "street-centre-yueyang",
        "street-centre",
        "follow-up",
        "consent",
        None,
    ),
    "referral-police-case-support-district-centre": (
        "district-centre",
        "district-centre",
        "treatment",
        "consent",
        None,
    ),
    "referral-camhs-discharge-school": (
        "school-songjiang-no2-middle",
        "school",
        "education-support",
        "consent",
        ["education"],
    ),
    "referral-civil-affairs-welfare-street-centre": (
        "street-centre-yueyang",
        "street-centre",
        "follow-up",
        "consent",
        None,
    ),
}
OPS = ("fhir", "validate", "profile", "categorise", "decide", "minimise")


def per_call_us(fn: Callable[[], Any], seconds: float, repeats: int) -> tuple[float, float]:
    """(fastest, median) µs per call."""
    fn()  # warm caches (code systems, policy)
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < seconds / 5:
        fn()
        calls += 1
    n = max(calls * 5, 10)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return min(runs), statistics.median(runs)


def profile_only(data: dict[str, Any], size: int) -> Callable[[], Any]:
    def run() -> Any:
        real = profile._structural_issues
        profile._structural_issues = lambda data: []
        try:
            return validate_referral(data, size=size, now=AT)
        finally:
            profile._structural_issues = real

    return run


def bench_sample(name: str, seconds: float, repeats: int) -> dict[str, Any]:
    path = SAMPLES / f"{name}.json"
    raw = path.read_bytes()
    data = json.loads(raw)
    policy = default_disclosure_policy()
    org, agency, purpose, basis, asked = PATHWAYS[name]
    referral = validate_referral(data, size=len(raw), now=AT)
    content = categorise(referral.bundle, policy)
    recipient = Recipient(org, agency)

    def run_decide() -> Disclosure | Any:
        return decide(
            referral.facts,
            content,
            recipient=recipient,
            purpose=purpose,
            basis=basis,
            at=AT,
            categories=asked,
        )

    decision = run_decide()
    if not isinstance(decision, Disclosure):
        raise SystemExit(f"{name}: expected a disclosure, got {decision.record()}")
    timings = {
        "fhir": per_call_us(lambda: Bundle.model_validate(data), seconds, repeats),
        "validate": per_call_us(lambda: validate_referral(data, size=len(raw), now=AT), seconds, repeats),
        "profile": per_call_us(profile_only(data, len(raw)), seconds, repeats),
        "categorise": per_call_us(lambda: categorise(referral.bundle, policy), seconds, repeats),
        "decide": per_call_us(run_decide, seconds, repeats),
        "minimise": per_call_us(
            lambda: minimise(content, decision.categories, consent_ids=decision.consent_ids), seconds, repeats
        ),
    }
    return {
        "bytes": len(raw),
        "entries": len(data["entry"]),
        "decision": {
            "basis": basis,
            "to": org,
            "purpose": purpose,
            "categories": sorted(decision.categories),
        },
        "us": {op: round(t[0], 1) for op, t in timings.items()},
        "us_median": {op: round(t[1], 1) for op, t in timings.items()},
    }


def cpu_per_call_us(fn: Callable[[], Any], seconds: float) -> float:
    """CPU µs per call (``time.process_time``) over a loop of at least ``seconds`` of CPU."""
    calls = 0
    start = time.process_time()
    while (spent := time.process_time() - start) < seconds:
        for _ in range(20):
            fn()
        calls += 20
    return spent / calls * 1e6


def bench_fhir_validators(sample: str, seconds: float, rounds: int) -> None:
    """fhir_core's model validators against schemas/fhirspeed.py's, alternating in one process."""
    data = json.loads((SAMPLES / f"{sample}.json").read_bytes())
    if not fhirspeed.active():
        raise SystemExit("the fast validators are not in effect (another fhir_core?)")
    variants = {"library": fhirspeed.uninstall, "fast": fhirspeed.install}
    runs: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for switch in variants.values():  # warm up both
            switch()
            for _ in range(50):
                Bundle.model_validate(data)
        for _ in range(rounds):
            for name, switch in variants.items():
                switch()
                runs[name].append(cpu_per_call_us(lambda: Bundle.model_validate(data), seconds))
    finally:
        fhirspeed.install()
    median = {name: statistics.median(r) for name, r in runs.items()}
    for name, r in runs.items():
        print(f"{name:<8} median {median[name]:7.0f} µs CPU  runs " + " ".join(f"{x:.0f}" for x in r))
    print(f"fast / library = {median['fast'] / median['library']:.2f}")
    out = {
        "benchmark": "Bundle.model_validate: fhir_core's model validators vs schemas/fhirspeed.py",
        "unit": "CPU microseconds per call (time.process_time), median of the rounds",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "settings": {"sample": sample, "seconds": seconds, "rounds": rounds},
        "median_us": median,
        "runs_us": runs,
    }
    target = ROOT / "bench" / "results" / "fhir_validators.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"written {target.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time budget per operation and sample")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fhir-validators", action="store_true", help="A/B fhir_core's model validators")
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds for --fhir-validators")
    parser.add_argument("--sample", default="referral-camhs-discharge-school", help="for --fhir-validators")
    args = parser.parse_args()
    if args.fhir_validators:
        bench_fhir_validators(args.sample, args.seconds, args.rounds)
        return
    results = {name: bench_sample(name, args.seconds, args.repeats) for name in PATHWAYS}
    width = max(len(n) for n in results) - len("referral-")
    header = f"{'sample (µs per op)':<{width}} {'bytes':>6} " + " ".join(f"{op:>10}" for op in OPS)
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        cells = " ".join(f"{r['us'][op]:>10.1f}" for op in OPS)
        print(f"{name.removeprefix('referral-'):<{width}} {r['bytes']:>6} {cells}")
    mean = {op: statistics.fmean(r["us"][op] for r in results.values()) for op in OPS}
    print("-" * len(header))
    print(f"{'mean':<{width}} {'':>6} " + " ".join(f"{mean[op]:>10.1f}" for op in OPS))
    out = {
        "benchmark": "schemas: edge validation, categorisation, disclosure decision, minimisation",
        "unit": "microseconds per operation (fastest of repeats; us_median per sample)",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "settings": {"seconds": args.seconds, "repeats": args.repeats},
        "mean_us": mean,
        "samples": results,
    }
    target = ROOT / "bench" / "results" / "schemas.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwritten {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
