"""What one referral costs at each step of the pipeline, in process, against the real database.

Run: .venv/bin/python bench/profile_steps.py [--n 300] [--repeats 3] [--cprofile]

The end-to-end benchmark (bench_pipeline.py) says how fast the whole system goes; on a shared
2-core machine its wall-clock figures move with everything else that runs. This script times each
step alone, sequentially, in one process (fastest of ``--repeats`` runs, microseconds per referral,
wall and CPU), so a change to one step can be judged by itself:

  api.*     what ``POST /v1/referrals`` does: parse the body, authenticate the API key (SQL),
            validate (fhir.resources + Qixin profile), verify the Ed25519 signature, seal for the
            hub, build and encode the intake envelope; ``api.request`` is the whole request through
            the real FastAPI app (ASGI, in process; Kafka produce included when a broker is given)
  worker.*  what the stream steps do for it: decode the intake, open the sealed Bundle, plan the
            routes (CEL rules), decide the disclosure, seal the delivery, store it in the key vault
            (SQL), project the referral and the delivery (SQL), chain one audit event (SQL)
Uses KAFKA_BOOTSTRAP / HUB_DATABASE_URL like bench_pipeline.py (a fresh database on that server).
``--cprofile`` also prints cProfile's top functions for the whole API request and the worker steps.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

SAMPLE = ROOT / "schemas" / "samples" / "referral-school-camhs-high.json"


def timed(n: int, repeats: int, step: Callable[[int], Any]) -> dict[str, float]:
    """Fastest of ``repeats`` passes over n items: wall and process-CPU microseconds per item."""
    best_wall = best_cpu = float("inf")
    for r in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            step(r * n + i)
        best_wall = min(best_wall, (time.perf_counter() - w0) / n * 1e6)
        best_cpu = min(best_cpu, (time.process_time() - c0) / n * 1e6)
    return {"wall_us": best_wall, "cpu_us": best_cpu}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cprofile", action="store_true")
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "steps.json"))
    args = p.parse_args()

    from tests.support.servers import fresh_database, kafka_bootstrap, postgres_url

    with kafka_bootstrap() as bootstrap, postgres_url() as pg_admin:
        prefix = f"steps{uuid.uuid4().hex[:8]}."
        db_url = fresh_database(pg_admin, prefix.rstrip("."))
        var_dir = Path(tempfile.mkdtemp(prefix="qixin-steps-"))
        os.environ.update(
            {
                "HUB_KAFKA__BOOTSTRAP": bootstrap,
                "HUB_KAFKA__TOPIC_PREFIX": prefix,
                "HUB_DATABASE_URL": db_url,
                "HUB_VAR_DIR": str(var_dir),
                "HUB_API__SUBMIT_RATE_PER_S": "1000000",
                "HUB_API__SUBMIT_BURST": "1000000",
            }
        )
        try:
            results = run(args)
        finally:
            _drop(pg_admin, db_url, bootstrap, prefix)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _drop(pg_admin: str, db_url: str, bootstrap: str, prefix: str) -> None:
    """Leave nothing behind: the run's database and topics."""
    import sqlalchemy as sa
    from kafka import KafkaAdminClient

    engine = sa.create_engine(pg_admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    finally:
        engine.dispose()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="qixin-steps")
    try:
        topics = [t for t in admin.list_topics() if t.startswith(prefix)]
        if topics:
            admin.delete_topics(topics)
    finally:
        admin.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from hub.adapters.apikey import ApiKeyStore
    from hub.adapters.auditstore import SqlAuditStore
    from hub.adapters.clock import SystemClock
    from hub.adapters.consentsql import SqlConsents
    from hub.adapters.kafka import apply_topics, encode
    from hub.adapters.readmodel import SqlReadModel
    from hub.adapters.sealing import HubSealing, SubmissionVerifier, open_with_directory_keys
    from hub.adapters.user import create_tables as create_user_tables
    from hub.adapters.vault import SqlKeyVault
    from hub.bootstrap import build_api, build_engine, build_route, build_router
    from hub.services.audit import AppendToChain
    from hub.services.consent import CurrentConsents
    from hub.services.crypto_port import HUB_OWNER, SignaturePurpose
    from hub.services.disclosure import ConsentDisclosure
    from hub.services.projection import Project
    from hub.services.routing import delivery_id_for
    from hub.settings import load_settings
    from schemas.audit import disclosure_event
    from schemas.envelope import DeliveryCreated, ReferralSubmitted
    from schemas.policy import default_disclosure_policy
    from schemas.profile import validate_referral

    settings = load_settings()
    apply_topics(settings.kafka)
    engine = build_engine(settings)
    create_user_tables(engine)
    store = open_with_directory_keys(settings)
    clock = SystemClock()
    sample = json.loads(SAMPLE.read_text(encoding="utf-8"))
    sender = validate_referral(sample).sender_org
    api_key = ApiKeyStore(engine).create(sender, label="steps")
    signer = store.signer(sender)
    total = args.n * args.repeats
    bodies, sigs = [], []
    for i in range(total):
        header = dict(sample["entry"][0]["resource"], id=f"mh-steps-{uuid.uuid4().hex[:8]}-{i}")
        bundle = dict(sample, entry=[dict(sample["entry"][0], resource=header), *sample["entry"][1:]])
        body = json.dumps(bundle, ensure_ascii=False).encode()
        bodies.append(body)
        sigs.append(signer.sign(body, purpose=SignaturePurpose.SUBMISSION))
    parsed = [json.loads(b) for b in bodies]

    keys_api = ApiKeyStore(engine)
    sealing = HubSealing(store, True)
    verifier = SubmissionVerifier(store)
    validated: list[Any] = [None] * total
    sealed: list[Any] = [None] * total
    intakes: list[bytes] = [b""] * total
    steps: dict[str, dict[str, float]] = {}

    def step(name: str, fn: Callable[[int], Any]) -> None:
        steps[name] = timed(args.n, args.repeats, fn)

    step("api.parse_json", lambda i: json.loads(bodies[i]))
    step("api.authenticate", lambda i: keys_api.authenticate(api_key))
    step(
        "api.validate_referral",
        lambda i: validated.__setitem__(i, validate_referral(parsed[i], size=len(bodies[i]))),
    )
    step("api.verify_signature", lambda i: verifier.verify(bodies[i], sigs[i], sender))
    step(
        "api.seal_for_hub",
        lambda i: sealed.__setitem__(i, sealing.seal_for_hub(validated[i].referral_id, bodies[i])),
    )

    def envelope(i: int) -> None:
        v = validated[i]
        intakes[i] = encode(
            ReferralSubmitted(
                event_id=str(uuid.uuid4()),
                referral_id=v.referral_id,
                idempotency_key=v.idempotency_key,
                submitted_at=clock.now(),
                student_pseudonym=v.student_pseudonym,
                facts=v.facts,
                sealed_bundle=sealed[i][0],
                bundle_key_id=sealed[i][1],
            )
        )

    step("api.envelope_encode", envelope)

    # -- the worker's steps ------------------------------------------------------------------------
    router = build_router(settings)
    consents = SqlConsents(engine)
    disclosure = ConsentDisclosure(default_disclosure_policy(), CurrentConsents(consents))
    vault = SqlKeyVault(engine)
    route = build_route(settings, engine, sealing, vault=vault, router=router)
    project = Project(SqlReadModel(engine))
    append = AppendToChain(SqlAuditStore(engine), store.signer(HUB_OWNER), clock)
    submitted: list[Any] = [None] * total
    bundles: list[Any] = [None] * total
    plans: list[Any] = [None] * total
    outcomes: list[Any] = [None] * total
    seals: list[Any] = [None] * total
    routed: list[Any] = [None] * total
    delivery_bytes: list[bytes] = [b""] * total
    now = clock.now()

    step(
        "worker.decode_intake",
        lambda i: submitted.__setitem__(i, ReferralSubmitted.model_validate(orjson.loads(intakes[i]))),
    )
    step(
        "worker.open_intake",
        lambda i: bundles.__setitem__(
            i, orjson.loads(sealing.open_intake(submitted[i].referral_id, submitted[i].sealed_bundle))
        ),
    )
    step("worker.plan_routes", lambda i: plans.__setitem__(i, router.plan(submitted[i].facts, now, ())))
    step(
        "worker.decide_disclosure",
        lambda i: outcomes.__setitem__(
            i, disclosure.decide(bundles[i], submitted[i], plans[i].routes[0], now)
        ),
    )

    def seal(i: int) -> None:
        r = plans[i].routes[0]
        seals[i] = sealing.seal_delivery(
            orjson.dumps(outcomes[i].view),
            referral_id=submitted[i].referral_id,
            delivery_id=delivery_id_for(submitted[i].referral_id, r.recipient_org),
            recipient_org=r.recipient_org,
            consent_ids=outcomes[i].consent_ids,
            at=now,
        )

    step("worker.seal_delivery", seal)
    step("worker.vault_put", lambda i: vault.put_many([seals[i]]))

    # The whole routing use case (the steps above end to end, on fresh referrals' intake).
    def copies(tag: str) -> list[Any]:
        """The intake under new referral ids (the sealed Bundle is bound to its id: sealed again)."""
        out = []
        for i in range(total):
            rid = tag + submitted[i].referral_id[4:]
            token, kid = sealing.seal_for_hub(rid, bodies[i])
            update = {"referral_id": rid, "idempotency_key": tag + submitted[i].idempotency_key}
            out.append(
                submitted[i].model_copy(update={**update, "sealed_bundle": token, "bundle_key_id": kid})
            )
        return out

    fresh = copies("rfx-")
    step("worker.route (use case)", lambda i: routed.__setitem__(i, route(fresh[i])))
    step(
        "worker.delivery_encode",
        lambda i: delivery_bytes.__setitem__(
            i, orjson.dumps(routed[i].deliveries[0].model_dump(mode="json"))
        ),
    )
    step("worker.delivery_decode", lambda i: DeliveryCreated.model_validate(orjson.loads(delivery_bytes[i])))
    step("worker.project_routed", lambda i: project.routed([routed[i]]))
    events = [disclosure_event(routed[i].deliveries[0]) for i in range(total)]
    step("worker.audit_append (1 event)", lambda i: append([events[i]]))

    batch_events = [
        disclosure_event(
            routed[i]
            .deliveries[0]
            .model_copy(update={"delivery_id": f"b{i}-" + routed[i].deliveries[0].delivery_id[:40]})
        )
        for i in range(total)
    ]

    def batched(i: int) -> None:
        if i % 100 == 0:
            append(batch_events[i : i + 100])

    step("worker.audit_append (batches of 100)", batched)

    # -- the whole API request, in process ----------------------------------------------------------
    import httpx

    app = build_api(settings)
    api_bodies = []
    for i in range(total):
        header = dict(sample["entry"][0]["resource"], id=f"mh-steps-req-{uuid.uuid4().hex[:8]}-{i}")
        bundle = dict(sample, entry=[dict(sample["entry"][0], resource=header), *sample["entry"][1:]])
        body = json.dumps(bundle, ensure_ascii=False).encode()
        api_bodies.append((body, signer.sign(body, purpose=SignaturePurpose.SUBMISSION)))

    async def requests() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as c,
        ):

            async def one(i: int) -> None:
                body, sig = api_bodies[i]
                r = await c.post(
                    "/v1/referrals",
                    content=body,
                    headers={
                        "Authorization": f"Bearer {api_key}",
                        "Content-Type": "application/fhir+json",
                        "X-Qixin-Signature": sig,
                    },
                )
                assert r.status_code == 202, r.text

            best_wall = best_cpu = float("inf")
            prof = cProfile.Profile() if args.cprofile else None
            for r in range(args.repeats):
                w0, c0 = time.perf_counter(), time.process_time()
                if prof and r == args.repeats - 1:
                    prof.enable()
                for i in range(args.n):
                    await one(r * args.n + i)
                if prof and r == args.repeats - 1:
                    prof.disable()
                best_wall = min(best_wall, (time.perf_counter() - w0) / args.n * 1e6)
                best_cpu = min(best_cpu, (time.process_time() - c0) / args.n * 1e6)
            steps["api.request (whole, in process)"] = {"wall_us": best_wall, "cpu_us": best_cpu}
            if prof:
                print("\n--- cProfile: API requests (main thread only; sync dependencies run in threads) ---")
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)

    asyncio.run(requests())

    if args.cprofile:
        again = copies("rfy-")
        prof = cProfile.Profile()
        prof.enable()
        for i in range(args.n):
            project.routed([route(again[i])])
        prof.disable()
        print("\n--- cProfile: worker steps (route + project the routed referral) ---")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)

    api = sum(v["cpu_us"] for k, v in steps.items() if k.startswith("api.") and "whole" not in k)
    worker = sum(
        v["cpu_us"]
        for k, v in steps.items()
        if k.startswith("worker.")
        and "(use case)" not in k
        and "batches" not in k
        and k
        not in (
            "worker.open_intake",
            "worker.plan_routes",
            "worker.decide_disclosure",
            "worker.seal_delivery",
            "worker.vault_put",
        )
    )
    print(f"\n{'step':<42} {'wall us':>9} {'cpu us':>9}")
    for name, v in steps.items():
        print(f"{name:<42} {v['wall_us']:9.0f} {v['cpu_us']:9.0f}")
    print(
        f"\nsum of api.* steps (CPU): {api:.0f} us; "
        f"worker use case + projections + 1 audit event (CPU): {worker:.0f} us"
    )
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "n": args.n,
        "repeats": args.repeats,
        "loadavg": os.getloadavg(),
        "steps_us": steps,
    }


if __name__ == "__main__":
    sys.exit(main())
