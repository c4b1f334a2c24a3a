"""Routing cost per referral at 10, 100, 1,000 and 10,000 generated rules.

Run: .venv/bin/python bench/bench_routing.py [--sizes 10,100,1000,10000] [--referrals 2000]

Rules are generated as YAML text and loaded through the real loader (CEL compiled and checked), each
with ``match`` keys drawn like real pathways (source type, reasons, risk level; 80 % also a town, the
way a district's rule set grows by local variants) and about a third with a CEL ``when`` residual.
Referrals are drawn from the same distributions. Reported per referral:
  hot     decide(..., explain="candidates") with warm condition memo (the pipeline's steady state)
  cold    the same with the memo disabled: every candidate's CEL runs in celpy
  full    decide(..., explain="full"): every rule accounted for (linear by design; for people)
Writes bench/results/routing.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.adapters.directory import load_directory  # noqa: E402
from hub.adapters.rules import CelCondition, build_ruleset  # noqa: E402
from hub.domain.directory import Directory  # noqa: E402
from hub.domain.routing import REFERRAL_REASONS, RuleFacts, RuleSet, decide, rule_facts  # noqa: E402
from schemas.envelope import ConsentSummary, ReferralFacts  # noqa: E402

SOURCES = ["school", "camhs", "police", "procuratorate", "civil-affairs", "street-centre", "district-centre"]
REASONS = sorted(REFERRAL_REASONS)
PURPOSES = ["treatment", "follow-up", "safeguarding"]
WHEN_TEMPLATES = [
    "age != null && age < {age}",
    'has_consent && "{purpose}" in consent_purposes',
    "!office_hours",
    "working_day && hour >= {hour}",
    "size(reasons) > 1 || risk_level >= {risk}",
]
TARGETS = [
    "{agency: district-centre}",
    "{agency: street-centre}",
    "{agency: camhs}",
    "{agency: civil-affairs}",
]
CHINA = timezone(timedelta(hours=8))


def generate_rules(n: int, rng: random.Random, towns: list[str], mode: str) -> str:
    """Pathway-like rules. ``broad``: 1-2 values per key, 80 % town-specific, so the number of rules a
    referral matches grows with the rule count. ``specific``: one value per key and always a town, as
    a large rule set made of local variants would be: few rules match any one referral."""
    lines = ["rules:"]
    few = [1] if mode == "specific" else [1, 1, 2]
    for i in range(n):
        sources = rng.sample(SOURCES, rng.choice(few))
        reasons = rng.sample(REASONS, rng.choice(few))
        risks = sorted(rng.sample([1, 2, 3, 4], rng.choice(few)))
        lines += [
            f"  - id: gen-{i:05d}",
            f"    priority: {rng.randint(0, 1000)}",
            "    match:",
            f"      source_type: [{', '.join(sources)}]",
            f"      reasons: [{', '.join(reasons)}]",
            f"      risk_level: [{', '.join(map(str, risks))}]",
        ]
        if mode == "specific" or rng.random() < 0.8:
            lines.append(f"      town: [{rng.choice(towns)}]")
        if rng.random() < 0.33:
            when = rng.choice(WHEN_TEMPLATES).format(
                age=rng.randint(8, 17),
                purpose=rng.choice(PURPOSES),
                hour=rng.randint(6, 20),
                risk=rng.randint(2, 4),
            )
            lines.append(f"    when: '{when}'")
        lines += [
            "    routes:",
            f"      - to: {rng.choice(TARGETS)}",
            f"        purpose: {rng.choice(PURPOSES)}",
            "        legal_basis: consent",
            "        sla: {acknowledge: 3wd, first_contact: 14d}",
        ]
    return "\n".join(lines) + "\n"


FALLBACK = """fallback:
  to: {agency: district-centre}
  queue: triage
  purpose: follow-up
  legal_basis: consent
  sla: {acknowledge: 1wd}
"""


def generate_referrals(n: int, directory: Directory, rng: random.Random) -> list[RuleFacts]:
    towns = [t.code for t in directory.towns]
    base = datetime(2026, 11, 30, 0, 0, tzinfo=CHINA)
    out = []
    for i in range(n):
        consents = []
        if rng.random() < 0.6:
            consents.append(
                ConsentSummary(
                    consent_id=f"c{i}",
                    status="active",
                    grantor="guardian",
                    recipients=["camhs", "street-centre"],
                    purposes=rng.sample(PURPOSES, 2),
                )
            )
        referral = ReferralFacts(
            source_org="bench",
            source_type=rng.choice(SOURCES),
            reasons=rng.sample(REASONS, rng.choice([1, 1, 2])),
            risk_level=rng.choice([1, 2, 2, 3, 3, 4]),
            priority="routine",
            age=rng.randint(6, 18),
            town=rng.choice(towns),
            consents=consents,
        )
        now = base + timedelta(minutes=rng.randint(0, 7 * 24 * 60))
        out.append(rule_facts(referral, now=now, working_day=now.isoweekday() <= 5, directory=directory))
    return out


def per_referral_us(
    ruleset: RuleSet, directory: Directory, referrals: list[RuleFacts], explain: str
) -> list[float]:
    times = []
    clock = time.perf_counter_ns
    for facts in referrals:
        start = clock()
        decide(facts, ruleset, directory, explain=explain)  # type: ignore[arg-type]
        times.append((clock() - start) / 1000)
    return times


def per_referral_index_us(ruleset: RuleSet, referrals: list[RuleFacts]) -> list[float]:
    times = []
    clock = time.perf_counter_ns
    for facts in referrals:
        start = clock()
        ruleset.index.candidates(facts.mapping)
        times.append((clock() - start) / 1000)
    return times


def _memo(ruleset: RuleSet, size: int) -> None:
    for rule in ruleset.rules:
        if isinstance(rule.when, CelCondition):
            rule.when.set_memo(size)


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "mean_us": round(statistics.fmean(times), 1),
        "p50_us": round(ordered[len(ordered) // 2], 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1], 1),
    }


def run_size(
    n: int, directory: Directory, referrals: list[RuleFacts], seed: int, mode: str
) -> dict[str, Any]:
    rng = random.Random(seed + n)
    text = generate_rules(n, rng, [t.code for t in directory.towns], mode)
    started = time.perf_counter()
    hot_set, issues = build_ruleset([("generated.yaml", text), ("fallback.yaml", FALLBACK)], directory)
    load_s = time.perf_counter() - started
    if hot_set is None:
        raise SystemExit("\n".join(map(str, issues[:20])))
    candidates = [hot_set.index.candidates(f.mapping).bit_count() for f in referrals]
    with_when = sum(
        1
        for f in referrals
        for i in _bits(hot_set.index.candidates(f.mapping))
        if hot_set.rules[i].when is not None
    )
    per_referral_us(hot_set, directory, referrals, "candidates")  # warm the memo and the caches
    hot = per_referral_us(hot_set, directory, referrals, "candidates")
    index = per_referral_index_us(hot_set, referrals)
    full = per_referral_us(hot_set, directory, referrals[: max(50, len(referrals) // 20)], "full")
    _memo(hot_set, 0)
    cold = per_referral_us(hot_set, directory, referrals, "candidates")
    _memo(hot_set, 4096)
    return {
        "mode": mode,
        "rules": n,
        "index": summary(index),
        "load_seconds": round(load_s, 2),
        "candidates_mean": round(statistics.fmean(candidates), 2),
        "cel_evaluations_per_referral": round(with_when / len(referrals), 2),
        "hot": summary(hot),
        "cold": summary(cold),
        "full": summary(full),
    }


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--referrals", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--modes", default="broad,specific")
    args = parser.parse_args()
    directory = load_directory(ROOT / "routing_rules" / "directory" / "songjiang.yaml")
    referrals = generate_referrals(args.referrals, directory, random.Random(args.seed))
    rows = [
        run_size(int(s), directory, referrals, args.seed, mode)
        for mode in args.modes.split(",")
        for s in args.sizes.split(",")
    ]
    header = (
        f"{'mode':>8} {'rules':>6} {'load s':>7} {'cand.':>6} {'CEL/ref':>7} {'index':>6} "
        f"{'hot mean':>9} {'hot p50':>8} {'hot p99':>8} {'cold mean':>10} {'cold p99':>9} {'full mean':>10}"
    )
    print("routing cost per referral, µs. cand.: rules the index leaves; CEL/ref: of those with a `when`;")
    print("index: computing the candidates; hot: decide(explain='candidates') with warm condition memo;")
    print("cold: memo off (celpy runs every time); full: decide(explain='full'), linear by design")
    print(header)
    for r in rows:
        print(
            f"{r['mode']:>8} {r['rules']:>6} {r['load_seconds']:>7} {r['candidates_mean']:>6} "
            f"{r['cel_evaluations_per_referral']:>7} {r['index']['mean_us']:>6} "
            f"{r['hot']['mean_us']:>9} {r['hot']['p50_us']:>8} {r['hot']['p99_us']:>8} "
            f"{r['cold']['mean_us']:>10} {r['cold']['p99_us']:>9} {r['full']['mean_us']:>10}"
        )
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "routing",
        "when": datetime.now(CHINA).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "referrals": args.referrals,
        "rows": rows,
    }
    (out_dir / "routing.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"written {out_dir / 'routing.json'}")


if __name__ == "__main__":
    main()
