"""Per-agency API keys for connectors: shown once, stored as SHA-256 (keys are 256-bit random)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from datetime import UTC, datetime

import sqlalchemy as sa

from hub.adapters.db import api_clients
from hub.services.port import Caller

PREFIX = "qx_"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyStore:
    """API keys in SQL; ``authenticate`` remembers an answer for ``cache_s`` seconds per process.

    Every submission authenticates, and a database round trip per request was a measurable share
    of the API's cost (bench/README.md); a key disabled with ``hub apikey disable`` therefore stops
    working within ``cache_s`` seconds rather than at once.
    """

    def __init__(self, engine: sa.Engine, cache_s: float = 5.0) -> None:
        self._engine = engine
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, Caller | None]] = {}

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
        digest = _hash(key)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._cache_s:
            return hit[1]
        caller = self._lookup(key)
        if len(self._cache) > 10_000:  # unknown keys must not grow it without bound
            self._cache.clear()
        self._cache[digest] = (now, caller)
        return caller

    async def authenticate_async(self, key: str) -> Caller | None:
        """``authenticate`` for the API's event loop: a remembered answer at once, a lookup in SQL
        in a worker thread (a thread hand-off on every request cost more than the lookup it saved)."""
        if not key.startswith(PREFIX):
            return None
        hit = self._cache.get(_hash(key))
        if hit is not None and time.monotonic() - hit[0] < self._cache_s:
            return hit[1]
        return await asyncio.to_thread(self.authenticate, key)

    def _lookup(self, key: str) -> Caller | None:
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
            disabled = conn.execute(
                api_clients.update().where(api_clients.c.org_id == org_id).values(disabled=True)
            ).rowcount
        self._cache.clear()  # at once in this process; other processes within cache_s
        return disabled
