"""The `hub` command: one root Typer app; each command group lives in its own module."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="Qixin referral hub", no_args_is_help=True, add_completion=False)

# (module under hub.cli, group name or None for top-level commands registered by the module)
_GROUPS: list[tuple[str, str | None]] = [
    ("run", None),
    ("kafka", "kafka"),
    ("topics", "topics"),
    ("deadletters", "deadletters"),
    ("keys", "keys"),
    ("rules", "rules"),
    ("directory", "directory"),
    ("validate", None),
    ("disclose", None),
    ("audit", "audit"),
    ("connector", "connector"),
    ("users", "users"),
]


def _register() -> None:
    for module_name, group in _GROUPS:
        module = importlib.import_module(f"hub.cli.{module_name}")
        if group is None:
            module.register(app)
        else:
            app.add_typer(module.app, name=group)


def main() -> None:
    _register()
    app()
