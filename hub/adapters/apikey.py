"""Per-agency API keys for connectors: shown once, stored as SHA-256 (keys are 256-bit random)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

import sqlalchemy as sa

from hub.adapters.db import api_clients
from hub.services.port import Caller

PREFIX = "qx_"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyStore:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def create(self, org_id: str, label: str = "connector") -> str:
        key = PREFIX + secrets.token_urlsafe(32)
        with self._engine.begin() as conn:
            conn.execute(
                api_clients.insert().values(
                    key_hash=_hash(key),
                    key_prefix=key[:10],
                    org_id=org_id,
                    label=label,
                    created_at=datetime.now(UTC),
                    disabled=False,
                )
            )
        return key

    def authenticate(self, key: str) -> Caller | None:
        if not key.startswith(PREFIX):
            return None
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(api_clients.c.org_id, api_clients.c.label, api_clients.c.disabled).where(
                    api_clients.c.key_hash == _hash(key)
                )
            ).first()
        if row is None or row.disabled:
            return None
        return Caller(org_id=row.org_id, role="system", label=row.label)

    def disable(self, org_id: str) -> int:
        with self._engine.begin() as conn:
            return conn.execute(
                api_clients.update().where(api_clients.c.org_id == org_id).values(disabled=True)
            ).rowcount
