"""Batch inserts on a real PostgreSQL: each row stored once, and the caller told exactly which were new.

A redelivered batch after a worker crash holds rows that are already stored next to rows that are
not; what the routing step does next (consent links, the "delivered" timeline row) depends on the
keys ``insert_many`` reports as inserted by this call.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.servers import scratch_hub_engine

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine(postgres: str) -> Iterator[sa.Engine]:
    with scratch_hub_engine(postgres, f"s{uuid.uuid4().hex[:8]}") as engine:
        yield engine


def _seal_row(delivery_id: str) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "referral_id": "r-" + delivery_id,
        "recipient_org": "sj-camhs-1",
        "recipient_key_id": "k1",
        "ciphertext": "c-" + delivery_id,
        "wrapped_key": "w",
        "signature": "s",
        "consent_ids": ["consent-1", "consent-2"],
        "created_at": AT,
    }


def _ids(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"d-{tag}-{i}" for i in range(n)]


def _stored(engine: sa.Engine, ids: list[str]) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT delivery_id, ciphertext FROM delivery_keys WHERE delivery_id = ANY(:ids)"),
            {"ids": ids},
        )
        return sorted((r.delivery_id, r.ciphertext) for r in rows)


def test_a_redelivery_reports_only_the_rows_it_inserted_and_stores_none_twice(engine: sa.Engine) -> None:
    from hub.adapters.db import delivery_keys, insert_many

    ids = _ids(6)
    with engine.begin() as conn:
        assert insert_many(conn, delivery_keys, [_seal_row(d) for d in ids[:3]]) == set(ids[:3])
    again = [dict(_seal_row(d), ciphertext="resealed") for d in ids]  # the first three exist

    with engine.begin() as conn:
        inserted = insert_many(conn, delivery_keys, again)

    assert inserted == set(ids[3:])
    assert _stored(engine, ids) == sorted(
        [(d, "c-" + d) for d in ids[:3]] + [(d, "resealed") for d in ids[3:]]
    )  # the first seal stands; one row per delivery


def test_the_same_key_twice_in_one_batch_is_stored_once(engine: sa.Engine) -> None:
    from hub.adapters.db import delivery_keys, insert_many

    (one,) = _ids(1)
    with engine.begin() as conn:
        inserted = insert_many(conn, delivery_keys, [_seal_row(one), dict(_seal_row(one), ciphertext="2nd")])

    assert inserted == {one}
    assert _stored(engine, [one]) == [(one, "c-" + one)]


def test_an_empty_batch_inserts_nothing(engine: sa.Engine) -> None:
    from hub.adapters.db import delivery_keys, insert_many

    with engine.begin() as conn:
        assert insert_many(conn, delivery_keys, []) == set()


def test_a_batch_larger_than_any_page_is_stored_whole(engine: sa.Engine) -> None:
    from hub.adapters.db import delivery_consents, delivery_keys, insert_many

    ids = _ids(1500)
    with engine.begin() as conn:
        assert insert_many(conn, delivery_keys, [_seal_row(d) for d in ids[:700]]) == set(ids[:700])
    with engine.begin() as conn:
        assert insert_many(conn, delivery_keys, [_seal_row(d) for d in ids]) == set(ids[700:])
        links = [{"consent_id": f"c-{d}", "delivery_id": d} for d in ids]
        assert insert_many(conn, delivery_consents, links) == {link["consent_id"] for link in links}

    assert len(_stored(engine, ids)) == 1500
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT count(*) FROM delivery_consents WHERE delivery_id = ANY(:ids)"), {"ids": ids}
        ).scalar_one()
    assert stored == 1500


def test_rows_are_stored_as_sqlalchemy_would_store_them(engine: sa.Engine) -> None:
    """JSON values, timezone-aware times and column defaults the rows leave out."""
    from hub.adapters.db import deliveries, insert_many

    (one,) = _ids(1)
    row = {
        "delivery_id": one,
        "task_id": "t-" + one,
        "referral_id": "r-" + one,
        "recipient_org": "sj-camhs-1",
        "recipient_type": "camhs",
        "sender_org": "sj-school-yueyang",
        "purpose": "treatment",
        "legal_basis": "consent",
        "categories": ["summary", "risk"],
        "priority": "urgent",
        "risk_level": 3,
        "reasons": ["self-harm", "学业"],
        "rule_id": "r1",
        "ruleset_version": "v1",
        "status": "requested",
        "created_at": AT,
        "updated_at": AT,
        "escalation": [{"after": "PT4H", "notify": "district"}],
    }
    with engine.begin() as conn:
        assert insert_many(conn, deliveries, [row]) == {one}
    with engine.connect() as conn:
        stored = conn.execute(sa.select(deliveries).where(deliveries.c.delivery_id == one)).mappings().one()

    assert {k: stored[k] for k in row} == row
    assert (stored["escalation_level"], stored["sealed_view"], stored["view_key_id"], stored["version"]) == (
        0,
        "",
        "",
        0,
    )
    assert stored["town"] is None


def test_rows_of_a_failed_transaction_are_not_kept(engine: sa.Engine) -> None:
    from hub.adapters.db import delivery_keys, insert_many

    ids = _ids(3)

    def batch_whose_next_write_fails() -> None:
        with engine.begin() as conn:
            insert_many(conn, delivery_keys, [_seal_row(d) for d in ids])
            raise RuntimeError("the batch's next write failed")

    with pytest.raises(RuntimeError):
        batch_whose_next_write_fails()

    assert _stored(engine, ids) == []


def test_a_single_row_that_exists_is_reported_as_not_inserted(engine: sa.Engine) -> None:
    from hub.adapters.db import delivery_keys, insert_many

    (one,) = _ids(1)
    with engine.begin() as conn:
        assert insert_many(conn, delivery_keys, [_seal_row(one)]) == {one}
    with engine.begin() as conn:
        assert insert_many(conn, delivery_keys, [dict(_seal_row(one), ciphertext="resealed")]) == set()

    assert _stored(engine, [one]) == [(one, "c-" + one)]


@pytest.mark.parametrize("size", [1, 3])
def test_a_row_the_database_refuses_raises_sqlalchemys_integrity_error(engine: sa.Engine, size: int) -> None:
    from hub.adapters.db import delivery_keys, insert_many

    ids = _ids(size)
    rows = [dict(_seal_row(d), signature=None) for d in ids]  # NOT NULL

    def batch() -> None:
        with engine.begin() as conn:
            insert_many(conn, delivery_keys, rows)

    with pytest.raises(sa.exc.IntegrityError):
        batch()
    assert _stored(engine, ids) == []


def _refused_and_swallowed(conn: sa.Connection) -> None:
    """A write whose database error is caught and ignored: PostgreSQL aborts the transaction."""
    from hub.adapters.db import delivery_keys, insert_many

    with contextlib.suppress(sa.exc.IntegrityError):
        insert_many(conn, delivery_keys, [dict(_seal_row(_ids(1)[0]), signature=None)])  # NOT NULL


@pytest.mark.parametrize("in_unit", [True, False], ids=["unit-of-work", "own-transaction"])
def test_a_commit_after_a_swallowed_database_error_raises_instead_of_losing_the_writes(
    engine: sa.Engine, in_unit: bool
) -> None:
    # PostgreSQL answers the COMMIT of an aborted transaction with a silent ROLLBACK: without the
    # guard these blocks would end normally with none of their rows stored.
    from hub.adapters.db import AbortedTransaction, UnitOfWork, delivery_keys, insert_many, writing

    ids = _ids(2)

    def unit_with_a_method_that_swallows_an_error() -> None:
        with UnitOfWork(engine)():
            with writing(engine) as conn:
                insert_many(conn, delivery_keys, [_seal_row(d) for d in ids])
            with writing(engine) as conn:  # another repository method joins the unit
                _refused_and_swallowed(conn)

    def transaction_that_swallows_an_error() -> None:
        with engine.begin() as conn:
            insert_many(conn, delivery_keys, [_seal_row(d) for d in ids])
            _refused_and_swallowed(conn)

    with pytest.raises(AbortedTransaction, match="aborted by an earlier database error"):
        (unit_with_a_method_that_swallows_an_error if in_unit else transaction_that_swallows_an_error)()
    assert _stored(engine, ids) == []
    with engine.begin() as conn:  # the pooled connection is usable again
        assert insert_many(conn, delivery_keys, [_seal_row(ids[0])]) == {ids[0]}
