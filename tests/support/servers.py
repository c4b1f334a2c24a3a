"""Real servers for tests: given by the environment, else testcontainers, else local provisioning."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "infra" / "kafka" / "kafka.sh"
PG_SH = REPO / "infra" / "postgres" / "pg.sh"
TEST_KAFKA_PORT = os.environ.get("QIXIN_TEST_KAFKA_PORT", "39092")
TEST_PG_PORT = os.environ.get("QIXIN_TEST_PG_PORT", "55433")


def docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _script(path: Path, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", str(path), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{path.name} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout.strip()


@contextmanager
def kafka_bootstrap() -> Iterator[str]:
    if given := os.environ.get("KAFKA_BOOTSTRAP"):
        yield given
        return
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    env = {"KAFKA_PORT": TEST_KAFKA_PORT}
    status = subprocess.run(["bash", str(KAFKA_SH), "status"], env={**os.environ, **env}, capture_output=True)
    already = status.returncode == 0
    _script(KAFKA_SH, "start", env=env)
    try:
        yield _script(KAFKA_SH, "bootstrap", env=env).splitlines()[-1]
    finally:
        if not already:
            _script(KAFKA_SH, "stop", env=env)


@contextmanager
def postgres_url() -> Iterator[str]:
    if given := os.environ.get("HUB_DATABASE_URL"):
        yield given
        return
    if docker_engine_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="psycopg") as pg:
            yield pg.get_connection_url()
        return
    env = {"PGPORT": TEST_PG_PORT}
    status = subprocess.run(["bash", str(PG_SH), "status"], env={**os.environ, **env}, capture_output=True)
    already = status.returncode == 0
    _script(PG_SH, "start", env=env)
    try:
        yield _script(PG_SH, "url", env=env).splitlines()[-1]
    finally:
        if not already:
            _script(PG_SH, "stop", env=env)


def fresh_database(admin_url: str, name: str) -> str:
    """A new empty database on the same server, so each hub under test starts clean."""
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


@contextmanager
def scratch_hub_engine(admin_url: str, name: str) -> Iterator[Any]:
    """An engine on a fresh database holding the hub's schema; the database is dropped afterwards."""
    import sqlalchemy as sa

    from hub.adapters.db import create_schema, make_engine

    engine = make_engine(fresh_database(admin_url, name))
    create_schema(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
