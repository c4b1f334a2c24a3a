"""SQL read model tables (SQLAlchemy Core): inboxes, timelines, API clients. Kafka is the record."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

metadata = sa.MetaData()

_TS = sa.DateTime(timezone=True)

referrals = sa.Table(
    "referrals",
    metadata,
    sa.Column("referral_id", sa.String(64), primary_key=True),
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("sender_org", sa.String(100), nullable=False, index=True),
    sa.Column("sender_type", sa.String(40), nullable=False),
    sa.Column("student_pseudonym", sa.String(100), nullable=False, index=True),
    sa.Column("risk_level", sa.Integer, nullable=False),
    sa.Column("priority", sa.String(20), nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("town", sa.String(60)),
    sa.Column("submitted_at", _TS, nullable=False),
    sa.Column("routed_at", _TS),
    sa.Column("ruleset_version", sa.String(80)),
    # The intake event as it was on Kafka (sealed Bundle, de-identified facts): re-routing after a
    # decline starts from it without re-reading the topic.
    sa.Column("intake", sa.JSON),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("delivery_id", sa.String(64), primary_key=True),
    sa.Column("task_id", sa.String(64), nullable=False, unique=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("recipient_org", sa.String(100), nullable=False, index=True),
    sa.Column("recipient_type", sa.String(40), nullable=False),
    sa.Column("sender_org", sa.String(100), nullable=False),
    sa.Column("purpose", sa.String(40), nullable=False),
    sa.Column("legal_basis", sa.String(20), nullable=False),
    sa.Column("categories", sa.JSON, nullable=False),
    sa.Column("priority", sa.String(20), nullable=False),
    sa.Column("risk_level", sa.Integer, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("town", sa.String(60)),
    sa.Column("rule_id", sa.String(100), nullable=False),
    sa.Column("ruleset_version", sa.String(80), nullable=False),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("business_status", sa.String(40)),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
    sa.Column("ack_due", _TS),
    sa.Column("first_contact_due", _TS),
    sa.Column("decide_due", _TS),
    sa.Column("escalation", sa.JSON),
    sa.Column("escalation_level", sa.Integer, nullable=False, default=0),
    sa.Column("acknowledged_at", _TS),
    sa.Column("decided_at", _TS),
    sa.Column("first_contact_at", _TS),
    sa.Column("closed_at", _TS),
    sa.Column("sealed_view", sa.Text, nullable=False, default=""),
    sa.Column("view_key_id", sa.String(80), nullable=False, default=""),
    # Kafka offsets order events per task; a late duplicate must not move the state backwards.
    sa.Column("version", sa.Integer, nullable=False, default=0),
)

timeline = sa.Table(
    "timeline",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(80), nullable=False, unique=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("task_id", sa.String(64)),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("from_status", sa.String(30)),
    sa.Column("to_status", sa.String(30)),
    sa.Column("business_status", sa.String(40)),
    sa.Column("actor_org", sa.String(100), nullable=False),
    sa.Column("actor_role", sa.String(40), nullable=False, default="system"),
    sa.Column("reason", sa.String(500)),
    sa.Column("at", _TS, nullable=False),
    # Sealed for the referrer (feedback closing the loop); base64url token, opened with its key.
    sa.Column("sealed_note", sa.Text),
)

api_clients = sa.Table(
    "api_clients",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("key_prefix", sa.String(16), nullable=False),
    sa.Column("org_id", sa.String(100), nullable=False, index=True),
    sa.Column("label", sa.String(100), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# JSON columns through orjson rather than the json module: the routing step writes several per
# delivery (categories, reasons, escalation chain, consent ids).
_JSON = {"json_serializer": _json_text, "json_deserializer": orjson.loads}


def make_engine(url: str, echo: bool = False) -> sa.Engine:
    """One engine per process; SQLite gets WAL so the API reads while the worker writes."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}, **_JSON
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    engine = sa.create_engine(url, echo=echo, pool_size=10, max_overflow=10, **_JSON)
    _ping_when_idle(engine)
    _refuse_aborted_commits(engine)
    return engine


class AbortedTransaction(sa.exc.InvalidRequestError):
    """A commit of a PostgreSQL transaction that an earlier, caught database error had aborted."""


def _refuse_aborted_commits(engine: sa.Engine) -> None:
    """Make a commit of an aborted transaction raise instead of rolling back in silence.

    After any failed statement PostgreSQL aborts the whole transaction, and COMMIT then rolls it
    back without an error: had a repository method caught a database error inside a unit of work
    (or its own ``engine.begin()``), every write of that transaction would be lost while the caller
    went on as if it had been stored (the routing step would then send deliveries whose keys and
    inbox rows do not exist). Raising here turns that into a failed block: rolled back, and the
    stream step retries or dead-letters the records, as for any other error.
    """

    @sa.event.listens_for(engine, "commit")
    def _aborted(conn: sa.Connection) -> None:
        driver = conn.connection.driver_connection
        info = getattr(driver, "info", None)
        status = getattr(info, "transaction_status", None)
        if status is not None and status.name == "INERROR":
            raise AbortedTransaction(
                "the transaction was aborted by an earlier database error that was caught; "
                "committing it would have silently discarded all of its writes"
            )


# A connection back in the pool for longer than this is pinged before reuse (a server restart or an
# idle timeout may have closed it). `pool_pre_ping` pings on every checkout, which costs a BEGIN,
# a SELECT 1 and a ROLLBACK round trip each: on the pipeline's hot path that doubled the SQL round
# trips per referral (bench/README.md). A connection used within the last seconds is trusted.
IDLE_PING_AFTER_S = 5.0


def _ping_when_idle(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, _proxy):  # type: ignore[no-untyped-def]
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_AFTER_S:
            return
        try:
            cur = dbapi_conn.cursor()
            cur.execute("SELECT 1")
            cur.close()
            dbapi_conn.rollback()
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise sa.exc.DisconnectionError(str(exc)) from exc


# --------------------------------------------------------------------------------------------------
# Several repositories' statements in one transaction

# The open units of this thread or task: engine -> the unit's connection (a new dict per unit).
_SHARED: ContextVar[dict[sa.Engine, sa.Connection] | None] = ContextVar("qixin_unit_of_work", default=None)


class UnitOfWork:
    """``with unit():`` — repository calls inside it that join share one transaction on ``engine``.

    The routing step reads the consents, stores the seals and projects the deliveries of a batch in
    one transaction: one connection checkout, one BEGIN and one COMMIT instead of three of each, and
    a delivery's key, its consent links and its inbox row become visible together. A repository
    method joins by opening its connection with ``writing`` / ``reading``; only methods that let
    every database error through may (one they caught would leave the shared transaction aborted:
    on PostgreSQL its commit then raises ``AbortedTransaction`` rather than losing the writes).
    Inside an open unit on the same engine (this thread or task) a nested one joins it. The unit
    commits when its block ends and rolls everything back if the block raises.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if _shared(self._engine) is not None:  # already inside a unit on this engine: join it
            yield
            return
        with self._engine.begin() as conn:
            token = _SHARED.set({**(_SHARED.get() or {}), self._engine: conn})
            try:
                yield
            finally:
                _SHARED.reset(token)


def _shared(engine: sa.Engine) -> sa.Connection | None:
    shared = _SHARED.get()
    return shared.get(engine) if shared else None


def writing(engine: sa.Engine) -> AbstractContextManager[sa.Connection]:
    """``engine.begin()``, or the open unit of work's connection (the unit commits)."""
    return _joined(engine, engine.begin)


def reading(engine: sa.Engine) -> AbstractContextManager[sa.Connection]:
    """``engine.connect()``, or the open unit of work's connection."""
    return _joined(engine, engine.connect)


@contextmanager
def _joined(
    engine: sa.Engine, open_own: Callable[[], AbstractContextManager[sa.Connection]]
) -> Iterator[sa.Connection]:
    conn = _shared(engine)
    if conn is not None:
        yield conn
        return
    with open_own() as own:
        yield own


def create_schema(engine: sa.Engine) -> None:
    """Create missing tables; safe when the API and the workers start at the same moment."""
    # Tables defined next to their repositories register on the shared metadata when imported.
    from hub.adapters import auditstore, directory, user  # noqa: F401

    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # Serialise concurrent creators: CREATE TABLE races even with checkfirst.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7201442)"))
            metadata.create_all(conn)
            _link_delivery_consents(conn)
        return
    for attempt in range(5):
        try:
            with engine.begin() as conn:
                metadata.create_all(conn)
                _link_delivery_consents(conn)
            return
        except sa.exc.OperationalError:  # SQLite: another process holds the write lock
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


def _link_delivery_consents(conn: sa.Connection) -> None:
    """A database from before ``delivery_consents`` existed: link its sealed deliveries once.

    A revocation finds the deliveries to withdraw through these links; without them, deliveries
    sealed before the upgrade would stay readable after their consent was revoked.
    """
    if conn.execute(sa.select(delivery_consents.c.delivery_id).limit(1)).first() is not None:
        return
    rows = conn.execute(sa.select(delivery_keys.c.delivery_id, delivery_keys.c.consent_ids))
    links = [
        {"consent_id": consent_id, "delivery_id": row.delivery_id}
        for row in rows
        for consent_id in (row.consent_ids or [])
    ]
    insert_many(conn, delivery_consents, links)


# Sealed delivery views and their wrapped data keys. The ciphertext also travels on Kafka; the wrapped
# key never does, so destroying it here (consent withdrawn) makes every copy unreadable.
delivery_keys = sa.Table(
    "delivery_keys",
    metadata,
    sa.Column("delivery_id", sa.String(64), primary_key=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("recipient_org", sa.String(100), nullable=False),
    sa.Column("recipient_key_id", sa.String(80), nullable=False),
    sa.Column("ciphertext", sa.Text, nullable=False),
    sa.Column("wrapped_key", sa.Text),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("consent_ids", sa.JSON, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("first_opened_at", _TS),
    sa.Column("destroyed_at", _TS),
    sa.Column("destroyed_reason", sa.String(200)),
)

# Which deliveries each consent allowed, so a revocation finds its deliveries by index.
delivery_consents = sa.Table(
    "delivery_consents",
    metadata,
    sa.Column("consent_id", sa.String(200), primary_key=True),
    sa.Column("delivery_id", sa.String(64), primary_key=True),
)


escalations = sa.Table(
    "escalations",
    metadata,
    sa.Column("event_id", sa.String(160), primary_key=True),
    sa.Column("subject_id", sa.String(80), nullable=False, index=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("task_id", sa.String(64)),
    sa.Column("owner_org", sa.String(100), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("notify", sa.String(120), nullable=False),
    sa.Column("due_at", _TS, nullable=False),
    sa.Column("at", _TS, nullable=False),
)

follow_ups = sa.Table(
    "follow_ups",
    metadata,
    sa.Column("followup_id", sa.String(80), primary_key=True),
    sa.Column("referral_id", sa.String(64), nullable=False, index=True),
    sa.Column("owner_org", sa.String(100), nullable=False, index=True),
    sa.Column("sequence", sa.Integer, nullable=False),
    sa.Column("scheduled_at", _TS, nullable=False),
    sa.Column("due_at", _TS, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # due | done
    sa.Column("outcome", sa.String(40)),
    sa.Column("done_at", _TS),
    sa.Column("escalation_level", sa.Integer, nullable=False, default=0),
)

# A supervisor's review of an emergency (break-glass) disclosure made at their agency's request
# (DESIGN §3): one per delivery, the first one wins. Codes and ids only, like the audit event it mirrors.
break_glass_reviews = sa.Table(
    "break_glass_reviews",
    metadata,
    sa.Column("delivery_id", sa.String(64), primary_key=True),
    sa.Column("referral_id", sa.String(64), nullable=False),
    sa.Column("sender_org", sa.String(100), nullable=False, index=True),
    sa.Column("outcome", sa.String(40), nullable=False),
    sa.Column("guardian_notice", sa.String(40), nullable=False),
    sa.Column("reviewed_by_role", sa.String(40), nullable=False),
    sa.Column("reviewed_by_user", sa.String(128)),
    sa.Column("reviewed_at", _TS, nullable=False),
    sa.Column("audit_event_id", sa.String(128), nullable=False),
)

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("consent_id", sa.String(100), primary_key=True),
    sa.Column("student_pseudonym", sa.String(100), nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("sender_org", sa.String(100), nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
    sa.Column("last_event_id", sa.String(80), nullable=False),
)

deadletter_replays = sa.Table(
    "deadletter_replays",
    metadata,
    sa.Column("event_id", sa.String(80), primary_key=True),
    sa.Column("source_topic", sa.String(200), nullable=False),
    sa.Column("replayed_at", _TS, nullable=False),
    sa.Column("replayed_by", sa.String(100), nullable=False),
)


def insert_once(conn: sa.Connection, table: sa.Table, values: dict[str, object]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True when this call inserted the row.

    RETURNING tells reliably (psycopg reports rowcount -1 for ON CONFLICT inserts).
    """
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    key = next(iter(table.primary_key.columns))
    stmt = dialect.insert(table).values(**values).on_conflict_do_nothing().returning(key)
    return conn.execute(stmt).first() is not None


def insert_many(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> set[Any]:
    """``insert_once`` for many rows; the primary keys this call inserted.

    Every row has the first row's keys (as SQLAlchemy's executemany requires). On PostgreSQL the rows
    go as an executemany of one fixed single-row statement on the transaction's psycopg connection
    (``_PgInsert``); elsewhere as SQLAlchemy's executemany of one cached statement, which it batches
    into multi-row INSERTs with RETURNING.
    """
    if not rows:
        return set()
    if conn.dialect.name == "postgresql" and (plan := _pg_insert(conn.dialect, table, tuple(rows[0]))):
        return plan.run(conn, rows)
    key = next(iter(table.primary_key.columns))
    stmt = _insert_ignoring(conn, table).returning(key)
    return set(conn.execute(stmt, rows).scalars())


class _PgInsert:
    """One table's INSERT … ON CONFLICT DO NOTHING RETURNING key for one row, compiled once.

    SQLAlchemy's multi-row INSERTs have a different text for each batch size and hundreds of
    parameters, past psycopg's parse cache (4096 characters, 50 parameters): psycopg re-parsed every
    one with a regex, and SQLAlchemy built each page's text. A fixed single-row text is parsed once;
    psycopg's executemany sends all its rows in pipeline mode (one round trip, the transaction's
    BEGIN included when it comes first) and, with ``returning=True``, keeps one result per row.
    The text, the casts and the value conversions (JSON) are SQLAlchemy's, from the same compiler.
    """

    def __init__(self, sql: str, binds: tuple[tuple[str, Any, Any], ...]) -> None:
        self.sql = sql
        self.binds = binds  # (name, SQLAlchemy bind processor or None, default or _NO_DEFAULT)

    def run(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> set[Any]:
        params = [
            {
                name: (process(value) if process else value)
                for name, process, default in self.binds
                for value in (row[name] if default is _NO_DEFAULT else row.get(name, default),)
            }
            for row in rows
        ]
        # The DBAPI connection of this Connection's transaction: same BEGIN, same COMMIT.
        psycopg_conn: Any = conn.connection.driver_connection
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            with psycopg_conn.cursor() as cur:
                if len(params) == 1:  # entering and leaving pipeline mode costs more than it saves here
                    cur.execute(self.sql, params[0])
                    return {r[0] for r in cur.fetchall()}
                cur.executemany(self.sql, params, returning=True)
                inserted: set[Any] = set()
                while True:
                    inserted.update(r[0] for r in cur.fetchall())
                    if not cur.nextset():
                        break
                return inserted
        except dbapi_error as exc:  # the exceptions callers of SQLAlchemy expect (IntegrityError, …)
            raise sa.exc.DBAPIError.instance(
                self.sql, None, exc, dbapi_error, hide_parameters=True, dialect=conn.dialect
            ) from exc


_NO_DEFAULT = object()
_PG_INSERTS: dict[tuple[str, sa.Table, tuple[str, ...]], _PgInsert | None] = {}


def _pg_insert(dialect: sa.Dialect, table: sa.Table, keys: tuple[str, ...]) -> _PgInsert | None:
    """The compiled single-row insert for rows with these keys; None: leave it to SQLAlchemy."""
    cache_key = (dialect.driver, table, keys)
    if cache_key in _PG_INSERTS:
        return _PG_INSERTS[cache_key]
    plan = _compile_pg_insert(dialect, table, keys)
    _PG_INSERTS[cache_key] = plan
    return plan


def _compile_pg_insert(dialect: sa.Dialect, table: sa.Table, keys: tuple[str, ...]) -> _PgInsert | None:
    from sqlalchemy.dialects import postgresql

    if dialect.paramstyle != "pyformat" or dialect.driver != "psycopg":
        return None
    key = next(iter(table.primary_key.columns))
    stmt = postgresql.insert(table).on_conflict_do_nothing().returning(key)
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    binds = []
    for name in compiled.binds:
        column = table.c.get(name)
        if column is None:
            return None
        default: Any = _NO_DEFAULT
        if name not in keys:  # a Python-side default SQLAlchemy would fill in
            if column.default is None or not column.default.is_scalar:
                return None
            default = column.default.arg  # type: ignore[attr-defined]
        binds.append((name, column.type.dialect_impl(dialect).bind_processor(dialect), default))
    if compiled.positiontup or compiled.string.count("%(") != len(binds):
        return None
    return _PgInsert(compiled.string, tuple(binds))


def _insert_ignoring(conn: sa.Connection, table: sa.Table) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def aware(value: Any) -> Any:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def aware_row(mapping: Any) -> dict[str, Any]:
    return {k: aware(v) for k, v in dict(mapping).items()}
