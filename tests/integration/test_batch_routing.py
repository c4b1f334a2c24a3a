"""The routing step's batch writes on a real PostgreSQL: a batch routes, a redelivered batch adds nothing.

The worker routes what arrives within a few milliseconds as one batch (one consent lookup, one vault
write, one read-model transaction). These tests drive that use case directly against the database,
the way the worker does after a crash: the same intake records again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.hub import sealed_intake
from tests.support.servers import REPO, fresh_database

pytestmark = pytest.mark.integration

SAMPLES = REPO / "schemas" / "samples"


@pytest.fixture(scope="module")
def wired(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from hub.adapters.db import create_schema
    from hub.adapters.readmodel import SqlReadModel
    from hub.adapters.sealing import HubSealing, open_with_directory_keys
    from hub.bootstrap import build_engine, build_route
    from hub.services.projection import Project
    from hub.settings import Settings

    name = f"b{uuid.uuid4().hex[:8]}"
    db_url = fresh_database(postgres, name)
    var = tmp_path_factory.mktemp("batch")
    mp = pytest.MonkeyPatch()
    mp.setenv("HUB_DATABASE_URL", db_url)
    mp.setenv("HUB_VAR_DIR", str(var))
    settings = Settings()
    engine = build_engine(settings)
    create_schema(engine)
    store = open_with_directory_keys(settings)
    sealing = HubSealing(store, True)
    route = build_route(settings, engine, sealing)
    yield {"route": route, "project": Project(SqlReadModel(engine)), "sealing": sealing, "engine": engine}
    engine.dispose()
    mp.undo()


def _intake(sealing: Any, sample: Path) -> Any:
    return sealed_intake(sealing, json.loads(sample.read_text(encoding="utf-8")))


def _count(engine: sa.Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def test_a_batch_routes_each_referral_and_a_broken_one_fails_alone(wired: dict[str, Any]) -> None:
    from hub.services.routing import Routed

    samples = sorted(SAMPLES.glob("referral-*.json"))
    intakes = [_intake(wired["sealing"], s) for s in samples]
    broken = intakes[1].model_copy(update={"sealed_bundle": intakes[0].sealed_bundle})  # not its own seal
    batch = [(i, ()) for i in [intakes[0], broken, *intakes[2:]]]

    outcomes = wired["route"].many(batch)

    assert isinstance(outcomes[1], Exception)  # the intake does not open under another referral's id
    routed = [o for o in outcomes if isinstance(o, Routed)]
    assert len(routed) == len(samples) - 1
    assert all(r.deliveries or r.refused for r in routed)
    new = wired["project"].routed(routed)
    deliveries = [d for r in routed for d in r.deliveries]
    assert new == len(deliveries) > len(routed) - 1
    engine = wired["engine"]
    for d in deliveries:  # each delivery in its recipient's inbox, announced once in the timeline
        assert _count(engine, "SELECT count(*) FROM deliveries WHERE delivery_id = :d", d=d.delivery_id) == 1
        assert (
            _count(
                engine, "SELECT count(*) FROM timeline WHERE task_id = :t AND kind = 'delivered'", t=d.task_id
            )
            == 1
        )


def test_a_redelivered_batch_keeps_the_first_seal_and_adds_no_row(wired: dict[str, Any]) -> None:
    from hub.services.routing import Routed

    intakes = [_intake(wired["sealing"], s) for s in sorted(SAMPLES.glob("referral-*.json"))[:4]]
    first = [o for o in wired["route"].many([(i, ()) for i in intakes]) if isinstance(o, Routed)]
    assert wired["project"].routed(first) > 0
    engine = wired["engine"]
    ids = [i.referral_id for i in intakes]
    rows = "SELECT count(*) FROM timeline WHERE referral_id = ANY(:ids)"
    before = _count(engine, rows, ids=ids)

    again = [o for o in wired["route"].many([(i, ()) for i in intakes]) if isinstance(o, Routed)]

    # The worker crashed after the first batch's writes: the second pass seals afresh, but the
    # ciphertext kept (on Kafka, in the vault and the inbox) is the first one.
    first_views = {d.delivery_id: d.sealed_view for r in first for d in r.deliveries}
    assert {d.delivery_id: d.sealed_view for r in again for d in r.deliveries} == first_views
    assert wired["project"].routed(again) == 0
    assert _count(engine, rows, ids=ids) == before
    assert _count(engine, "SELECT count(*) FROM referrals WHERE referral_id = ANY(:ids)", ids=ids) == len(ids)


def test_a_database_from_before_the_consent_links_gets_them_when_the_hub_starts(
    wired: dict[str, Any],
) -> None:
    from hub.adapters.db import create_schema
    from hub.adapters.vault import SqlKeyVault
    from hub.services.routing import Routed

    intakes = [_intake(wired["sealing"], s) for s in sorted(SAMPLES.glob("referral-*.json"))]
    routed = [o for o in wired["route"].many([(i, ()) for i in intakes]) if isinstance(o, Routed)]
    wired["project"].routed(routed)
    engine = wired["engine"]
    ids = [d.delivery_id for r in routed for d in r.deliveries]
    with engine.connect() as conn:
        sealed = conn.execute(
            sa.text("SELECT delivery_id, consent_ids FROM delivery_keys WHERE delivery_id = ANY(:ids)"),
            {"ids": ids},
        ).all()
    under_consent = [(row.delivery_id, c) for row in sealed for c in row.consent_ids]
    assert under_consent, "the samples hold consent-based deliveries"
    with engine.begin() as conn:  # the database as it was before the link table existed
        conn.execute(sa.text("DROP TABLE delivery_consents"))

    create_schema(engine)  # what every hub process does when it starts

    vault = SqlKeyVault(engine)
    for delivery_id, consent_id in under_consent:  # a revocation finds each one to withdraw
        assert delivery_id in {s.delivery_id for s in vault.unopened_under_consent(consent_id)}


def test_a_batch_s_keys_consent_links_and_inbox_rows_commit_together(wired: dict[str, Any]) -> None:
    from hub.adapters.db import UnitOfWork
    from hub.services.routing import Routed

    engine = wired["engine"]
    unit = UnitOfWork(engine)
    commits: list[int] = []

    def committed(_conn: Any) -> None:
        commits.append(1)

    sa.event.listen(engine, "commit", committed)
    intakes = [_intake(wired["sealing"], s) for s in sorted(SAMPLES.glob("referral-*.json"))[:4]]
    ids = [i.referral_id for i in intakes]
    keys = "SELECT count(*) FROM delivery_keys WHERE referral_id = ANY(:ids)"
    inbox = "SELECT count(*) FROM deliveries WHERE referral_id = ANY(:ids)"
    try:
        with unit():  # what the worker's routing step does with a batch
            routed = [o for o in wired["route"].many([(i, ()) for i in intakes]) if isinstance(o, Routed)]
            new = wired["project"].routed(routed)
            # Another session (the recipient's inbox) sees nothing of the batch yet.
            assert _count(engine, keys, ids=ids) == _count(engine, inbox, ids=ids) == 0
        assert new == _count(engine, keys, ids=ids) == _count(engine, inbox, ids=ids) > 0
        assert len(commits) == 1  # consent lookup, seals and projection: one transaction

        later = [_intake(wired["sealing"], s) for s in sorted(SAMPLES.glob("referral-*.json"))[:2]]
        later_ids = [i.referral_id for i in later]

        def failing_step() -> None:
            with unit():
                routed = [o for o in wired["route"].many([(i, ()) for i in later]) if isinstance(o, Routed)]
                assert wired["project"].routed(routed) > 0
                raise RuntimeError("the step failed after its writes")

        with pytest.raises(RuntimeError):
            failing_step()
        # Nothing half-done: no key without its inbox row, no inbox row without its key.
        assert _count(engine, keys, ids=later_ids) == _count(engine, inbox, ids=later_ids) == 0
        referrals = "SELECT count(*) FROM referrals WHERE referral_id = ANY(:ids)"
        assert _count(engine, referrals, ids=later_ids) == 0
    finally:
        sa.event.remove(engine, "commit", committed)


def test_new_deliveries_notify_listeners_at_commit_and_a_redelivery_does_not(wired: dict[str, Any]) -> None:
    import psycopg

    from hub.adapters.db import UnitOfWork
    from hub.adapters.readmodel import DELIVERED_CHANNEL
    from hub.services.routing import Routed

    engine = wired["engine"]
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    intakes = [_intake(wired["sealing"], s) for s in sorted(SAMPLES.glob("referral-*.json"))[:3]]
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {DELIVERED_CHANNEL}")
        with UnitOfWork(engine)():
            routed = [o for o in wired["route"].many([(i, ()) for i in intakes]) if isinstance(o, Routed)]
            assert wired["project"].routed(routed) > 0
            assert list(listener.notifies(timeout=0.3)) == []  # nothing before the commit
        [note] = list(listener.notifies(timeout=5, stop_after=1))
        assert (note.channel, note.payload) == (DELIVERED_CHANNEL, "")  # no ids, nothing personal

        assert wired["project"].routed(routed) == 0  # the same batch again adds no delivery
        assert list(listener.notifies(timeout=0.5)) == []
