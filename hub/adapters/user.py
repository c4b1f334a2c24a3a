"""Staff users, sessions and login attempts in SQL, and the argon2 password hasher."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hub.adapters.db import metadata
from hub.domain.error import Conflict
from hub.services.identity import Role, SessionRecord, StaffUser

_TS = sa.DateTime(timezone=True)

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.String(40), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("org_id", sa.String(100), nullable=False, index=True),
    sa.Column("role", sa.String(30), nullable=False),
    sa.Column("display_name", sa.String(100), nullable=False),
    sa.Column("password_hash", sa.String(200), nullable=False, default=""),
    sa.Column("external_subject", sa.String(200), unique=True),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
    sa.Column("password_changed_at", _TS),
)

sessions = sa.Table(
    "sessions",
    metadata,
    # SHA-256 of the cookie value: a database leak does not hand out live sessions.
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(40), nullable=False, index=True),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("last_seen_at", _TS, nullable=False),
    sa.Column("expires_at", _TS, nullable=False),
)

login_attempts = sa.Table(
    "login_attempts",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("at", _TS, nullable=False),
    sa.Column("success", sa.Boolean, nullable=False),
    sa.Index("ix_login_attempts_user_source_at", "username", "source", "at"),
)

TABLES = [users, sessions, login_attempts]


def create_tables(engine: sa.Engine) -> None:
    metadata.create_all(engine, tables=TABLES)


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _user(row: Any) -> StaffUser:
    return StaffUser(
        user_id=row["user_id"],
        username=row["username"],
        org_id=row["org_id"],
        role=Role(row["role"]),
        display_name=row["display_name"],
        disabled=bool(row["disabled"]),
        created_at=_aware(row["created_at"]),
        password_hash=row["password_hash"] or "",
        external_subject=row["external_subject"],
    )


class Argon2Hasher:
    """argon2id with the library's current recommended parameters (RFC 9106 low-memory profile)."""

    def __init__(self) -> None:
        self._ph = _Argon2()

    def hash(self, password: str) -> str:
        return self._ph.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._ph.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._ph.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


class SqlUserRepository:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def add(self, user: StaffUser) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    users.insert().values(
                        user_id=user.user_id,
                        username=user.username,
                        org_id=user.org_id,
                        role=user.role.value,
                        display_name=user.display_name,
                        password_hash=user.password_hash,
                        external_subject=user.external_subject,
                        disabled=user.disabled,
                        created_at=user.created_at,
                        updated_at=user.created_at,
                        password_changed_at=user.created_at,
                    )
                )
        except sa.exc.IntegrityError:
            raise Conflict(f"user '{user.username}' exists already", code="user-exists") from None

    def _one(self, where: Any) -> StaffUser | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(users).where(where)).mappings().first()
        return _user(row) if row else None

    def by_username(self, username: str) -> StaffUser | None:
        return self._one(users.c.username == username)

    def by_id(self, user_id: str) -> StaffUser | None:
        return self._one(users.c.user_id == user_id)

    def list(self, org_id: str | None = None) -> list[StaffUser]:
        q = sa.select(users).order_by(users.c.org_id, users.c.username)
        if org_id:
            q = q.where(users.c.org_id == org_id)
        with self._engine.connect() as conn:
            return [_user(r) for r in conn.execute(q).mappings()]

    def set_password(self, user_id: str, password_hash: str, at: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                users.update()
                .where(users.c.user_id == user_id)
                .values(password_hash=password_hash, password_changed_at=at, updated_at=at)
            )

    def set_disabled(self, user_id: str, disabled: bool, at: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                users.update().where(users.c.user_id == user_id).values(disabled=disabled, updated_at=at)
            )


class SqlSessionStore:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def create(self, record: SessionRecord) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                sessions.insert().values(
                    token_hash=record.token_hash,
                    user_id=record.user_id,
                    csrf_token=record.csrf_token,
                    created_at=record.created_at,
                    last_seen_at=record.last_seen_at,
                    expires_at=record.expires_at,
                )
            )
            # Expired sessions go when new ones come: no sweeper process needed.
            conn.execute(sessions.delete().where(sessions.c.expires_at < record.created_at))

    def get(self, token_hash: str) -> SessionRecord | None:
        with self._engine.connect() as conn:
            row = (
                conn.execute(sa.select(sessions).where(sessions.c.token_hash == token_hash))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return SessionRecord(
            token_hash=row["token_hash"],
            user_id=row["user_id"],
            csrf_token=row["csrf_token"],
            created_at=_aware(row["created_at"]),
            last_seen_at=_aware(row["last_seen_at"]),
            expires_at=_aware(row["expires_at"]),
        )

    def touch(self, token_hash: str, at: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(sessions.update().where(sessions.c.token_hash == token_hash).values(last_seen_at=at))

    def delete(self, token_hash: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(sessions.delete().where(sessions.c.token_hash == token_hash))

    def delete_for_user(self, user_id: str) -> int:
        with self._engine.begin() as conn:
            return int(conn.execute(sessions.delete().where(sessions.c.user_id == user_id)).rowcount)


class SqlLoginAttempts:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def record(self, username: str, source: str, at: datetime, success: bool) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                login_attempts.insert().values(
                    username=username[:64], source=source[:64], at=at, success=success
                )
            )

    def failures_since(self, username: str, source: str, since: datetime) -> list[datetime]:
        q = (
            sa.select(login_attempts.c.at)
            .where(login_attempts.c.username == username[:64])
            .where(login_attempts.c.source == source[:64])
            .where(login_attempts.c.success.is_(False))
            .where(login_attempts.c.at >= since)
            .order_by(login_attempts.c.at)
        )
        with self._engine.connect() as conn:
            return [_aware(r) for r in conn.execute(q).scalars()]

    def clear(self, username: str, source: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                login_attempts.delete()
                .where(login_attempts.c.username == username[:64])
                .where(login_attempts.c.source == source[:64])
                .where(login_attempts.c.success.is_(False))
            )
