"""CPU per referral of the worker's pure routing work: the routing plan plus, for every planned route,
the disclosure decision and the minimised view.

Run: .venv/bin/python bench/bench_disclosure.py [--seconds 2] [--rounds 3] [--profile]

Every sample referral (schemas/samples/*.json) is validated once at the edge, as the API does; then, as
``RouteReferral._stage`` does for each referral, the loop plans its routes with the district's rules
(``RulesRouter.plan``, explain="full" as the worker runs it) and calls ``ConsentDisclosure.decide`` for
each route with the referral's consents (no database: the consents in the facts stand for the looked-up
ones). Each referral gets its own freshly parsed Bundle object, as the worker's ``orjson.loads`` of the
intake gives it. Figures are ``time.process_time`` over loops of at least ``--seconds``, per referral
(the samples in turn), ``--rounds`` times; the median is reported. ``--profile`` prints a cProfile of
one loop instead. Writes bench/results/disclosure.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.bootstrap import build_router  # noqa: E402
from hub.services.disclosure import ConsentDisclosure  # noqa: E402
from hub.settings import load_settings  # noqa: E402
from schemas.envelope import ReferralSubmitted  # noqa: E402
from schemas.policy import default_disclosure_policy  # noqa: E402
from schemas.profile import validate_referral  # noqa: E402

SAMPLES = ROOT / "schemas" / "samples"
AT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
COPIES = 4  # Bundle objects per sample, used in turn: no referral sees the previous one's object


def load_referrals() -> list[tuple[str, bytes, ReferralSubmitted]]:
    out = []
    for path in sorted(SAMPLES.glob("*.json")):
        raw = path.read_bytes()
        v = validate_referral(json.loads(raw), size=len(raw), now=AT)
        event = ReferralSubmitted(
            event_id=f"bench-{path.stem}",
            referral_id=v.referral_id,
            idempotency_key=v.idempotency_key,
            submitted_at=AT,
            student_pseudonym=v.student_pseudonym,
            facts=v.facts,
        )
        out.append((path.stem, orjson.dumps(v.bundle), event))
    return out


class Work:
    """The per-referral work, over a fixed cycle of referrals and Bundle copies."""

    def __init__(self) -> None:
        self.router = build_router(load_settings())
        self.disclosure = ConsentDisclosure(default_disclosure_policy())
        self.referrals = load_referrals()
        self.cycle = [(orjson.loads(raw), event) for _ in range(COPIES) for _, raw, event in self.referrals]

    def one(self, bundle: dict[str, Any], event: ReferralSubmitted) -> list[Any]:
        plan = self.router.plan(event.facts, AT, ())
        consents = event.facts.consents
        return [self.disclosure.decide(bundle, event, r, AT, consents) for r in plan.routes]

    def loop(self) -> int:
        for bundle, event in self.cycle:
            self.one(bundle, event)
        return len(self.cycle)

    def outcomes(self) -> dict[str, Any]:
        """Every sample's outcomes as JSON-ready data: to compare versions of the code."""
        out = {}
        for name, raw, event in self.referrals:
            plan = self.router.plan(event.facts, AT, ())
            decided = self.one(orjson.loads(raw), event)
            out[name] = {
                "explanation": plan.explanation,
                "routes": [
                    {
                        "to": r.recipient_org,
                        "allowed": o.allowed,
                        "reason_code": o.reason_code,
                        "reason": o.reason,
                        "basis": o.basis,
                        "categories": list(o.categories),
                        "consent_ids": list(o.consent_ids),
                        "review_required": o.review_required,
                        "expires_at": o.expires_at.isoformat() if o.expires_at else None,
                        "view": orjson.dumps(o.view).decode() if o.view is not None else None,
                    }
                    for r, o in zip(plan.routes, decided, strict=True)
                ],
            }
        return out


def cpu_us_per_referral(work: Work, seconds: float) -> float:
    done = 0
    start = time.process_time()
    while (spent := time.process_time() - start) < seconds:
        done += work.loop()
    return spent / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per round (at least)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one round instead")
    parser.add_argument("--dump-outcomes", type=Path, help="write every sample's outcomes as JSON and stop")
    args = parser.parse_args()
    work = Work()
    if args.dump_outcomes:
        args.dump_outcomes.write_text(json.dumps(work.outcomes(), indent=1, ensure_ascii=False) + "\n")
        return
    work.loop()  # warm: rule memo, policy caches
    routes = sum(len(work.router.plan(e.facts, AT, ()).routes) for _, _, e in work.referrals)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        cpu_us_per_referral(work, args.seconds)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    rounds = [cpu_us_per_referral(work, args.seconds) for _ in range(args.rounds)]
    median = statistics.median(rounds)
    print(
        f"plan + decide every route: {median:.1f} µs CPU per referral (median of {args.rounds} rounds: "
        + ", ".join(f"{r:.1f}" for r in rounds)
        + f"); {len(work.referrals)} samples, {routes} routes"
    )
    out = {
        "benchmark": "disclosure: routing plan + disclosure decision and minimised view for every route",
        "unit": "CPU microseconds per referral (time.process_time; median of rounds)",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "settings": {"seconds": args.seconds, "rounds": args.rounds},
        "samples": len(work.referrals),
        "routes": routes,
        "us_per_referral": round(median, 1),
        "rounds_us": [round(r, 1) for r in rounds],
    }
    target = ROOT / "bench" / "results" / "disclosure.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
