"""The resumable outbox: one SQLite file per connector recording each source record's sending state.

A record is marked ``pending`` (and committed) before it is sent and ``sent`` after the hub or the
broker acknowledged it, so a crash between the two re-sends it on the next run with the same message
id (the hub answers with the same referral id) and a crash anywhere else neither loses nor repeats it.
``first_attempt_at`` is kept so a re-sent Bundle is byte-identical to the first attempt. Only opaque
record ids, states and hub ids are stored: no Bundle, no name, no identifier of a child.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS record (
    record_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    message_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    sends INTEGER NOT NULL DEFAULT 0,
    first_attempt_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    sent_at TEXT,
    referral_id TEXT,
    task_id TEXT,
    error TEXT,
    source TEXT,
    row INTEGER
);
CREATE INDEX IF NOT EXISTS record_state ON record (state);
CREATE TABLE IF NOT EXISTS handed (
    task_id TEXT PRIMARY KEY,
    referral_id TEXT NOT NULL,
    delivery_id TEXT,
    sender_org TEXT,
    pseudonym TEXT,
    control_id TEXT UNIQUE,
    handed_at TEXT NOT NULL,
    files TEXT
);
CREATE INDEX IF NOT EXISTS handed_pseudonym ON handed (pseudonym);
"""


_HANDED = "SELECT task_id, referral_id, delivery_id, sender_org, pseudonym, control_id, handed_at FROM handed"


@dataclass(frozen=True)
class RecordState:
    record_id: str
    state: str
    attempts: int
    sends: int
    first_attempt_at: datetime
    referral_id: str | None
    task_id: str | None
    error: str | None


@dataclass(frozen=True)
class Handed:
    """A delivery this connector handed to the agency's system (``pull``)."""

    task_id: str
    referral_id: str
    delivery_id: str | None
    sender_org: str | None
    pseudonym: str | None
    control_id: str | None
    handed_at: datetime


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._in_batch = False

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group state changes into one transaction (Kafka batches); nested use is a no-op."""
        if self._in_batch:
            yield
            return
        self._in_batch = True
        self._db.execute("BEGIN")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._in_batch = False

    def get(self, record_id: str) -> RecordState | None:
        row = self._db.execute(
            "SELECT record_id, state, attempts, sends, first_attempt_at, referral_id, task_id, error "
            "FROM record WHERE record_id = ?",
            (record_id,),
        ).fetchone()
        if row is None:
            return None
        return RecordState(
            row[0], row[1], row[2], row[3], datetime.fromisoformat(row[4]), row[5], row[6], row[7]
        )

    def begin(
        self, record_id: str, kind: str, message_id: str | None, source: str, row: int, at: datetime
    ) -> datetime:
        """Mark the record pending before sending; return when it was first attempted."""
        now = _now()
        self._db.execute(
            "INSERT INTO record (record_id, kind, message_id, state, attempts, first_attempt_at, updated_at, "
            "source, row) VALUES (?, ?, ?, 'pending', 1, ?, ?, ?, ?) "
            "ON CONFLICT (record_id) DO UPDATE SET attempts = attempts + 1, "
            "updated_at = excluded.updated_at, "
            "state = CASE WHEN state = 'sent' THEN 'sent' ELSE 'pending' END, "
            "source = excluded.source, row = excluded.row",
            (record_id, kind, message_id, at.isoformat(), now, source, row),
        )
        state = self.get(record_id)
        assert state is not None
        return state.first_attempt_at

    def mark_sent(
        self, record_id: str, *, referral_id: str | None = None, task_id: str | None = None
    ) -> None:
        now = _now()
        self._db.execute(
            "UPDATE record SET state = 'sent', sends = sends + 1, sent_at = ?, updated_at = ?, "
            "referral_id = COALESCE(?, referral_id), task_id = COALESCE(?, task_id), error = NULL "
            "WHERE record_id = ?",
            (now, now, referral_id, task_id, record_id),
        )

    def mark_failed(self, record_id: str, error: str) -> None:
        self._db.execute(
            "UPDATE record SET state = 'failed', updated_at = ?, error = ? "
            "WHERE record_id = ? AND state != 'sent'",
            (_now(), error[:500], record_id),
        )

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT state, COUNT(*) FROM record GROUP BY state").fetchall())

    def sent_ids(self) -> dict[str, str | None]:
        return dict(
            self._db.execute("SELECT record_id, referral_id FROM record WHERE state = 'sent'").fetchall()
        )

    # -- deliveries handed to the agency's system --------------------------------------------------
    def handed(self, task_id: str) -> Handed | None:
        return self._one_handed(self._db.execute(f"{_HANDED} WHERE task_id = ?", (task_id,)).fetchone())

    def handed_by_control_id(self, control_id: str) -> Handed | None:
        return self._one_handed(self._db.execute(f"{_HANDED} WHERE control_id = ?", (control_id,)).fetchone())

    def handed_by_pseudonym(self, pseudonym: str) -> list[Handed]:
        rows = self._db.execute(
            f"{_HANDED} WHERE pseudonym = ? ORDER BY handed_at DESC", (pseudonym,)
        ).fetchall()
        return [h for h in map(self._one_handed, rows) if h is not None]

    @staticmethod
    def _one_handed(row: tuple[Any, ...] | None) -> Handed | None:
        if row is None:
            return None
        task_id, referral_id, delivery_id, sender_org, pseudonym, control_id, handed_at = row
        return Handed(
            task_id,
            referral_id,
            delivery_id,
            sender_org,
            pseudonym,
            control_id,
            datetime.fromisoformat(handed_at),
        )

    def record_handed(self, handed: Handed, files: list[str]) -> None:
        self._db.execute(
            "INSERT INTO handed (task_id, referral_id, delivery_id, sender_org, pseudonym, control_id, "
            "handed_at, files) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO NOTHING",
            (
                handed.task_id,
                handed.referral_id,
                handed.delivery_id,
                handed.sender_org,
                handed.pseudonym,
                handed.control_id,
                handed.handed_at.isoformat(),
                ",".join(files),
            ),
        )
