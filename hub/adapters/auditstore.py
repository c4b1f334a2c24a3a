"""SQL storage of the audit hash chain (``audit_log``) and its signed checkpoints (``audit_checkpoints``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from hub.adapters.db import aware, metadata
from hub.domain.audit import INDEX_FIELDS, ChainConflict, ChainHead, ChainRow, Checkpoint
from hub.services.audit import AuditSearch

_TS = sa.DateTime(timezone=True)
# Any constant: serialises chain writers on PostgreSQL for the span of one append transaction.
_APPEND_LOCK = 0x51_58_41_55  # "QXAU"

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("event_id", sa.String(128), nullable=False, unique=True),
    sa.Column("prev_hash", sa.String(80), nullable=False),
    sa.Column("hash", sa.String(80), nullable=False),
    # The exact canonical bytes that were hashed (UTF-8 JSON); everything below is an index of them.
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("type", sa.String(40), nullable=False, index=True),
    sa.Column("action", sa.String(1), nullable=False),
    sa.Column("recorded", _TS, nullable=False, index=True),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("agent_org", sa.String(128), nullable=False, index=True),
    sa.Column("agent_role", sa.String(80)),
    sa.Column("agent_user", sa.String(128)),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("referral_id", sa.String(128), index=True),
    sa.Column("delivery_id", sa.String(128)),
    sa.Column("task_id", sa.String(128)),
    sa.Column("entity_org", sa.String(128), index=True),
    sa.Column("purpose", sa.String(80)),
    sa.Column("legal_basis", sa.String(80)),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("head_hash", sa.String(80), nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("at", _TS, nullable=False),
    sa.Column("key_id", sa.String(80), nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
)


class SqlAuditStore:
    """Implements ``hub.services.audit.AuditStore`` on the read-model database."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    # ------------------------------------------------------------------------------- chain

    def head(self) -> ChainHead | None:
        with self._engine.connect() as conn:
            return self._head(conn)

    @staticmethod
    def _head(conn: sa.Connection) -> ChainHead | None:
        row = conn.execute(
            sa.select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).first()
        return ChainHead(int(row.seq), row.hash) if row else None

    def count(self, upto_seq: int | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(audit_log)
        if upto_seq is not None:
            q = q.where(audit_log.c.seq <= upto_seq)
        with self._engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def existing(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        with self._engine.connect() as conn:
            found = conn.execute(sa.select(audit_log.c.event_id).where(audit_log.c.event_id.in_(event_ids)))
            return {r.event_id for r in found}

    def insert(self, rows: Sequence[ChainRow]) -> None:
        if not rows:
            return
        values = [self._values(r) for r in rows]
        try:
            with self._engine.begin() as conn:
                if self._postgres:
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_APPEND_LOCK)))
                # The rows were computed against a head; refuse them if the chain moved meanwhile.
                head = self._head(conn)
                seq, digest = (head.seq, head.hash) if head else (0, None)
                if rows[0].seq != seq + 1 or (digest is not None and rows[0].prev_hash != digest):
                    raise ChainConflict(f"the chain head moved to seq {seq}")
                conn.execute(audit_log.insert(), values)
        except IntegrityError as exc:
            raise ChainConflict("a seq or event id of this append is already in the chain") from exc

    @staticmethod
    def _values(row: ChainRow) -> dict[str, Any]:
        if row.index is None:
            raise ValueError("a chain row needs its index columns to be stored")
        values = {name: row.index.get(name) for name in INDEX_FIELDS}
        values.update(
            seq=row.seq,
            event_id=row.event_id,
            prev_hash=row.prev_hash,
            hash=row.hash,
            payload=row.payload.decode("utf-8"),
        )
        return values

    def rows(self, after_seq: int = 0, batch: int = 1000) -> Iterator[ChainRow]:
        after = after_seq
        while True:
            q = sa.select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq).limit(batch)
            with self._engine.connect() as conn:
                page = list(conn.execute(q).mappings())
            for r in page:
                yield ChainRow(
                    seq=int(r["seq"]),
                    event_id=r["event_id"],
                    prev_hash=r["prev_hash"],
                    hash=r["hash"],
                    payload=r["payload"].encode("utf-8"),
                    index={name: r[name] for name in INDEX_FIELDS},
                )
            if len(page) < batch:
                return
            after = int(page[-1]["seq"])

    # ------------------------------------------------------------------------------- checkpoints

    @staticmethod
    def _checkpoint(r: Any) -> Checkpoint:
        return Checkpoint(
            number=int(r["number"]),
            seq=int(r["seq"]),
            head_hash=r["head_hash"],
            count=int(r["count"]),
            at=aware(r["at"]),
            signature=r["signature"],
        )

    def latest_checkpoint(self) -> Checkpoint | None:
        q = sa.select(audit_checkpoints).order_by(audit_checkpoints.c.number.desc()).limit(1)
        with self._engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return self._checkpoint(row) if row else None

    def checkpoints(self) -> list[Checkpoint]:
        q = sa.select(audit_checkpoints).order_by(audit_checkpoints.c.number)
        with self._engine.connect() as conn:
            return [self._checkpoint(r) for r in conn.execute(q).mappings()]

    def insert_checkpoint(self, checkpoint: Checkpoint) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    audit_checkpoints.insert().values(
                        number=checkpoint.number,
                        seq=checkpoint.seq,
                        head_hash=checkpoint.head_hash,
                        count=checkpoint.count,
                        at=checkpoint.at,
                        key_id=checkpoint.key_id,
                        signature=checkpoint.signature,
                    )
                )
        except IntegrityError as exc:
            raise ChainConflict(f"checkpoint {checkpoint.number} exists already") from exc

    # ------------------------------------------------------------------------------- search

    def search(self, query: AuditSearch) -> list[tuple[int, str, bytes]]:
        c = audit_log.c
        q = sa.select(c.seq, c.hash, c.payload).where(c.seq > query.after_seq)
        if query.referral_id:
            q = q.where(c.referral_id == query.referral_id)
        if query.agency:
            q = q.where(sa.or_(c.agent_org == query.agency, c.entity_org == query.agency))
        # UTC bounds: SQLite compares the stored UTC wall-clock text, not instants.
        if query.since:
            q = q.where(c.recorded >= query.since.astimezone(UTC))
        if query.until:
            q = q.where(c.recorded < query.until.astimezone(UTC))
        if query.type:
            q = q.where(c.type == query.type.value)
        q = q.order_by(c.seq).limit(query.limit)
        with self._engine.connect() as conn:
            return [(int(r.seq), r.hash, r.payload.encode("utf-8")) for r in conn.execute(q)]
