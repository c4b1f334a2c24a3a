"""Where the worker keeps faust's local state: under the hub's var dir, not the working directory."""

from __future__ import annotations

from pathlib import Path

from hub.agents.app import make_app
from hub.settings import Settings


def test_faust_state_lives_under_the_var_dir(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var")
    settings.kafka.topic_prefix = "t1."

    app = make_app(settings)

    appdir = Path(app.conf.appdir)
    assert appdir.is_relative_to(tmp_path / "var" / "faust")
    assert app.conf.id in appdir.parts  # two hubs with different topic prefixes never share it


def test_the_state_dir_can_be_created_by_faust_on_a_fresh_var_dir(tmp_path: Path) -> None:
    app = make_app(Settings(var_dir=tmp_path / "fresh"))

    app._create_directories()  # what the worker calls as it starts; faust creates only the last level

    assert Path(app.conf.tabledir).is_dir()
