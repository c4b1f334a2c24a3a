"""Client CPU and wall per referral of the routing step's SQL writes, on a real PostgreSQL.

Run: .venv/bin/python bench/bench_sql.py [--sizes 1,10,100] [--referrals 200] [--repeats 3]

Times the routing step's SQL per batch — the consent lookup (``SqlConsents.statuses``),
``SqlKeyVault.put_many`` and ``SqlReadModel.record_routed`` — for batches of 1, 10 and 100 referrals
routed from the sample Bundles (their deliveries, refusals and sealed views, as
``RouteReferral.many`` makes them). Every batch holds fresh referrals, so every row is new, as in
the steady state. Figures are the fastest of ``--repeats`` passes over ``--referrals`` referrals per
size, after one warm-up batch (SQLAlchemy's compile cache and psycopg's prepared statements warm).
CPU is this process's (``time.process_time``): the client side, which is what the worker pays; the
server's work shows in wall only. Each size is timed two ways, passes alternating: ``separate``
(each call its own transaction) and ``unit`` (one ``UnitOfWork`` for the batch, as the worker runs
it).
Uses HUB_DATABASE_URL's server or the test server (tests/support/servers.py); a fresh database,
dropped afterwards. Writes bench/results/sql.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLES = ROOT / "schemas" / "samples"


class _KeepSeals:
    """A vault that stores nothing: routing makes the seals, the timed part stores them."""

    last: Sequence[Any] = ()

    def put_many(self, seals: Sequence[Any]) -> dict[str, Any]:
        self.last = seals
        return {seal.delivery_id: seal for seal in seals}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1,10,100")
    p.add_argument("--referrals", type=int, default=200, help="referrals timed per size and pass")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cprofile", action="store_true", help="print cProfile's top functions of the writes")
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "sql.json"))
    args = p.parse_args()

    import sqlalchemy as sa

    from tests.support.servers import fresh_database, postgres_url

    with postgres_url() as pg_admin:
        name = f"sql{uuid.uuid4().hex[:8]}"
        db_url = fresh_database(pg_admin, name)
        os.environ.update({"HUB_DATABASE_URL": db_url, "HUB_VAR_DIR": tempfile.mkdtemp(prefix="qixin-sql-")})
        try:
            rows = run(args)
        finally:
            admin = sa.create_engine(pg_admin, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    result = {
        "benchmark": "sql",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "referrals": args.referrals,
        "repeats": args.repeats,
        "rows": rows,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from hub.adapters.consentsql import SqlConsents
    from hub.adapters.db import UnitOfWork, create_schema
    from hub.adapters.readmodel import SqlReadModel
    from hub.adapters.sealing import HubSealing, open_with_directory_keys
    from hub.adapters.vault import SqlKeyVault
    from hub.bootstrap import build_engine, build_route
    from hub.services.projection import Project
    from hub.services.routing import Routed
    from hub.settings import load_settings
    from schemas.envelope import ReferralSubmitted
    from tests.support.hub import sealed_intake

    settings = load_settings()
    engine = build_engine(settings)
    create_schema(engine)
    store = open_with_directory_keys(settings)
    sealing = HubSealing(store, True)
    keep = _KeepSeals()
    route = build_route(settings, engine, sealing, vault=keep)
    samples = [json.loads(s.read_text(encoding="utf-8")) for s in sorted(SAMPLES.glob("referral-*.json"))]

    def intake(i: int) -> ReferralSubmitted:
        return sealed_intake(sealing, samples[i % len(samples)])

    def batches(size: int, count: int) -> list[tuple[Sequence[Any], list[Routed]]]:
        out = []
        for _ in range(count):
            outcomes = route.many([(intake(i), ()) for i in range(size)])
            out.append((keep.last, [o for o in outcomes if isinstance(o, Routed)]))
        return out

    vault = SqlKeyVault(engine)
    project = Project(SqlReadModel(engine))
    consents = SqlConsents(engine)
    unit = UnitOfWork(engine)

    def writes(batch: tuple[Sequence[Any], list[Routed]]) -> None:
        seals, routed = batch
        consents.statuses(sorted({c for seal in seals for c in seal.consent_ids}))
        vault.put_many(seals)
        project.routed(routed)

    def in_unit(batch: tuple[Sequence[Any], list[Routed]]) -> None:
        with unit():
            writes(batch)

    modes = {"separate": writes, "unit": in_unit}
    prof = cProfile.Profile(time.process_time) if args.cprofile else None
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        per_pass = max(1, args.referrals // size)
        work = batches(size, 1 + per_pass * args.repeats * len(modes))
        deliveries = sum(len(r.deliveries) for _, b in work for r in b) / sum(len(b) for _, b in work)
        writes(work[0])  # warm-up
        best = {mode: [float("inf"), float("inf")] for mode in modes}  # cpu, wall
        passes = [mode for _ in range(args.repeats) for mode in modes]  # alternating
        for k, mode in enumerate(passes):
            chunk = work[1 + k * per_pass : 1 + (k + 1) * per_pass]
            if prof and mode == "unit":
                prof.enable()
            w0, c0 = time.perf_counter(), time.process_time()
            for batch in chunk:
                modes[mode](batch)
            if prof:
                prof.disable()
            n = sum(len(b) for _, b in chunk)
            best[mode][0] = min(best[mode][0], (time.process_time() - c0) / n * 1e6)
            best[mode][1] = min(best[mode][1], (time.perf_counter() - w0) / n * 1e6)
        for mode, (cpu, wall) in best.items():
            rows.append(
                {
                    "batch": size,
                    "mode": mode,
                    "deliveries_per_referral": round(deliveries, 2),
                    "cpu_us": round(cpu, 1),
                    "wall_us": round(wall, 1),
                }
            )
            print(f"batch {size:>4} {mode:>8}: cpu {cpu:8.1f} µs/referral   wall {wall:8.1f} µs/referral")
    engine.dispose()
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
