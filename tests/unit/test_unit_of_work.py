"""UnitOfWork on an embedded SQLite file: repository calls inside one block share one transaction."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.adapters.db import UnitOfWork, reading, writing


def _database(path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (k TEXT PRIMARY KEY)"))
    return engine


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return _database(tmp_path / "uow.db")


@pytest.fixture
def other(tmp_path: Path) -> sa.Engine:
    return _database(tmp_path / "other.db")


def _add(engine: sa.Engine, key: str) -> None:
    with writing(engine) as conn:
        conn.execute(sa.text("INSERT INTO t (k) VALUES (:k)"), {"k": key})


def _keys(engine: sa.Engine) -> list[str]:
    with reading(engine) as conn:
        return sorted(conn.execute(sa.text("SELECT k FROM t")).scalars())


def _committed(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:  # a session of its own, as another process would read
        return sorted(conn.execute(sa.text("SELECT k FROM t")).scalars())


def test_writes_outside_a_unit_commit_each_on_their_own(engine: sa.Engine) -> None:
    _add(engine, "a")
    _add(engine, "b")
    assert _committed(engine) == ["a", "b"]


def test_writes_inside_a_unit_commit_together_and_reads_see_them(engine: sa.Engine) -> None:
    unit = UnitOfWork(engine)
    with unit():
        _add(engine, "a")
        with unit():  # a nested block joins the open one
            _add(engine, "b")
        assert _keys(engine) == ["a", "b"]  # the unit's own reads see its writes
    assert _committed(engine) == ["a", "b"]


def test_a_unit_that_raises_leaves_nothing(engine: sa.Engine) -> None:
    unit = UnitOfWork(engine)

    def step() -> None:
        with unit():
            _add(engine, "a")
            _add(engine, "b")
            raise RuntimeError("failed after the writes")

    with pytest.raises(RuntimeError):
        step()
    assert _committed(engine) == []
    _add(engine, "c")  # the next write, outside any unit, is on its own again
    assert _committed(engine) == ["c"]


def test_a_unit_on_another_engine_is_not_joined(engine: sa.Engine, other: sa.Engine) -> None:
    def step() -> None:
        with UnitOfWork(other)():
            _add(engine, "kept")  # this engine's write commits by itself
            raise RuntimeError("the other engine's unit fails")

    with pytest.raises(RuntimeError):
        step()
    assert _committed(engine) == ["kept"]


def test_a_unit_opened_inside_another_engine_s_unit_is_its_own(engine: sa.Engine, other: sa.Engine) -> None:
    def step() -> None:
        with UnitOfWork(other)(), UnitOfWork(engine)():  # this engine's unit, not a join of the other's
            _add(other, "other")
            _add(engine, "a")
            _add(engine, "b")
            raise RuntimeError("fails after the writes")

    with pytest.raises(RuntimeError):
        step()
    assert _committed(engine) == []  # both of this engine's writes rolled back together
    assert _committed(other) == []
