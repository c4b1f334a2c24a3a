"""`hub rules check|explain|test`: validate, dry-run and test the routing rule sets."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from hub.adapters.directory import DirectoryInvalid, load_directory
from hub.adapters.rules import (
    check_ruleset,
    facts_from_document,
    load_rule_tests,
    parse_time,
    run_rule_tests,
)
from hub.adapters.workcalendar import ChinaWorkCalendar
from hub.domain.directory import Directory
from hub.domain.error import InvalidInput
from hub.domain.routing import RuleSet, decide
from hub.settings import load_settings

app = typer.Typer(help="Routing rules: check, explain, test.", no_args_is_help=True)

DirArg = Annotated[Path | None, typer.Argument(help="rule-set directory (default: the configured one)")]
DirectoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--directory", "-d", help="directory YAML (default: DIR/directory/*.yaml, else the configured one)"
    ),
]


def _display(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def _rules_dir(rules_dir: Path | None) -> Path:
    return _display(rules_dir if rules_dir is not None else load_settings().rules.dir)


def _directory_file(rules_dir: Path, directory: Path | None) -> Path:
    if directory is not None:
        return directory
    local = sorted((rules_dir / "directory").glob("*.yaml"))
    if local:
        return _display(local[0])
    return _display(load_settings().rules.directory_file)


def _load_directory(path: Path) -> Directory:
    try:
        return load_directory(path)
    except DirectoryInvalid as exc:
        for issue in exc.issues:
            typer.echo(str(issue))
        raise typer.Exit(1) from exc


def _load(rules_dir: Path | None, directory: Path | None) -> tuple[Path, RuleSet, Directory]:
    rdir = _rules_dir(rules_dir)
    dir_obj = _load_directory(_directory_file(rdir, directory))
    ruleset, issues = check_ruleset(rdir, dir_obj)
    if ruleset is None:
        for issue in issues:
            typer.echo(str(issue))
        raise typer.Exit(1)
    return rdir, ruleset, dir_obj


def work_calendar() -> ChinaWorkCalendar:
    """The public-holiday calendar plus the district's override file (routing_rules/calendar/)."""
    return ChinaWorkCalendar.from_file(load_settings().rules.dir / "calendar" / "workdays.yaml")


@app.command()
def check(rules_dir: DirArg = None, directory: DirectoryOpt = None) -> None:
    """Validate every rule file; print `file:line: message` per problem, exit 1 if any."""
    rdir = _rules_dir(rules_dir)
    dfile = _directory_file(rdir, directory)
    dir_obj = _load_directory(dfile)
    ruleset, issues = check_ruleset(rdir, dir_obj)
    for issue in issues:
        typer.echo(str(issue))
    if ruleset is None:
        typer.echo(f"{len(issues)} problem(s) in {rdir}", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"ok: {len(ruleset.rules)} rules in {rdir}, version {ruleset.version}; "
        f"directory {dfile} ({len(dir_obj.organisations)} organisations, {dir_obj.version})"
    )


@app.command()
def explain(
    file: Annotated[Path, typer.Argument(help="a referral Bundle (FHIR JSON) or a facts JSON document")],
    rules_dir: Annotated[Path | None, typer.Option("--rules", "-r", help="rule-set directory")] = None,
    directory: DirectoryOpt = None,
    now: Annotated[str | None, typer.Option(help="routing time, ISO 8601 with offset")] = None,
    declined: Annotated[
        list[str] | None, typer.Option("--declined", help="an organisation that declined")
    ] = None,
    working_day: Annotated[
        bool | None, typer.Option("--working-day/--not-working-day", help="override the calendar")
    ] = None,
) -> None:
    """Dry-run the rules on one referral; print the routes and the explanation as JSON."""
    _, ruleset, dir_obj = _load(rules_dir, directory)
    try:
        document: Any = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        typer.echo(f"{file}: cannot read JSON: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not isinstance(document, dict):
        typer.echo(f"{file}: expected a JSON object", err=True)
        raise typer.Exit(2)
    calendar = work_calendar()
    try:
        at: datetime | None = parse_time(now) if now else None
        facts = facts_from_document(
            document,
            directory=dir_obj,
            calendar=calendar,
            now=at,
            working_day=working_day,
            declined_by=declined or (),
        )
    except (InvalidInput, ValueError) as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(2) from exc
    decision = decide(facts, ruleset, dir_obj)
    out = {"facts": facts.as_dict(), **decision.as_dict()}
    typer.echo(json.dumps(out, ensure_ascii=False, indent=2))


@app.command("test")
def run_tests(
    rules_dir: DirArg = None,
    directory: DirectoryOpt = None,
    tests_dir: Annotated[Path | None, typer.Option("--tests", help="test cases (default: DIR/tests)")] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="print the decision of failing cases")
    ] = False,
) -> None:
    """Run the example-based tests (DIR/tests/*.yaml); print PASS/FAIL per case, exit 1 on any failure."""
    rdir, ruleset, dir_obj = _load(rules_dir, directory)
    tdir = tests_dir or rdir / "tests"
    cases, issues = load_rule_tests(tdir)
    for issue in issues:
        typer.echo(str(issue))
    if not cases and not issues:
        typer.echo(f"no test cases in {tdir}")
        raise typer.Exit(1)
    calendar = work_calendar()
    results = run_rule_tests(cases, ruleset, dir_obj, calendar)
    for result in results:
        typer.echo(str(result))
        if verbose and not result.passed and result.decision is not None:
            typer.echo(json.dumps(result.decision.as_dict(), ensure_ascii=False, indent=2))
    passed = sum(r.passed for r in results)
    failed = len(results) - passed
    typer.echo(f"{passed} passed, {failed} failed")
    if failed or issues:
        raise typer.Exit(1)
