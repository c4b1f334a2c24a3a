"""`hub rules check|explain|test` and `hub directory list|show|import` as an operator runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import directory as directory_cli
from hub.cli import rules as rules_cli

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "routing_rules"
SAMPLE_DIR = RULES / "directory" / "songjiang.yaml"
BROKEN = Path(__file__).resolve().parent / "fixtures" / "rules_broken"
runner = CliRunner()


def test_check_passes_on_the_shipped_rules() -> None:
    result = runner.invoke(rules_cli.app, ["check", str(RULES)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 9 rules in ")
    assert "version sha256:" in result.output


def test_check_fails_with_file_line_messages() -> None:
    result = runner.invoke(rules_cli.app, ["check", str(BROKEN), "--directory", str(SAMPLE_DIR)])
    assert result.exit_code == 1
    # paths print relative to the working directory when they are under it
    lines = [
        line.replace(f"{BROKEN}/", "").replace("tests/unit/fixtures/rules_broken/", "")
        for line in result.output.splitlines()
    ]
    assert "duplicate_id.yaml:10: duplicate rule id 'elevated' (first at duplicate_id.yaml:3)" in lines
    assert "cel_syntax.yaml:8: when: CEL syntax error at column 20: unexpected '&&'" in lines


def test_test_runs_the_shipped_cases() -> None:
    result = runner.invoke(rules_cli.app, ["test", str(RULES)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].endswith(" passed, 0 failed")
    assert result.output.count("PASS ") >= 20


def test_test_exits_non_zero_on_a_failing_case(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "wrong.yaml").write_text(
        """cases:
  - name: crisis to the police?
    facts: {source_org: school-sijing-middle, source_type: school, reasons: [self-harm], risk_level: 4,
            priority: stat, town: sijing, school: school-sijing-middle}
    now: "2026-11-30T10:00:00+08:00"
    expect:
      routes: [{recipient: police-songjiang}]
""",
        encoding="utf-8",
    )
    result = runner.invoke(rules_cli.app, ["test", str(RULES), "--tests", str(tests)])
    assert result.exit_code == 1
    assert "FAIL " in result.output
    assert (
        "recipients: expected ['police-songjiang'], got ['camhs-songjiang-mhc', 'district-centre']"
        in result.output
    )
    assert result.output.splitlines()[-1] == "0 passed, 1 failed"


def test_explain_prints_routes_and_explanation_as_json_for_a_bundle() -> None:
    bundle = ROOT / "schemas" / "samples" / "referral-school-camhs-high.json"
    result = runner.invoke(rules_cli.app, ["explain", str(bundle), "--rules", str(RULES)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["matched"] is True
    assert out["fallback"] is False
    assert out["ruleset_version"].startswith("sha256:")
    assert [r["recipient"] for r in out["routes"]] == ["camhs-songjiang-mhc"]
    assert {t["rule"] for t in out["explanation"]} >= {"crisis-any-source", "high-risk-green-channel"}
    assert out["facts"]["town"] == "yueyang"


def test_explain_takes_facts_and_a_decline(tmp_path: Path) -> None:
    facts = tmp_path / "facts.json"
    facts.write_text(
        json.dumps(
            {
                "source_org": "school-sijing-middle",
                "source_type": "school",
                "reasons": ["self-harm"],
                "risk_level": 4,
                "priority": "stat",
                "town": "sijing",
                "now": "2026-11-30T10:00:00+08:00",
            }
        ),
        encoding="utf-8",
    )
    result = runner.invoke(
        rules_cli.app, ["explain", str(facts), "--rules", str(RULES), "--declined", "camhs-songjiang-mhc"]
    )
    assert result.exit_code == 0, result.output
    routes = json.loads(result.output)["routes"]
    assert [(r["recipient"], r["pathway_step"]) for r in routes] == [
        ("district-centre", 0),
        ("camhs-songjiang-central", 1),
    ]


def test_explain_refuses_a_bad_document(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"source_type": "bank"}), encoding="utf-8")
    result = runner.invoke(rules_cli.app, ["explain", str(bad), "--rules", str(RULES)])
    assert result.exit_code == 2


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    monkeypatch.setenv("HUB_DATABASE_URL", url)
    monkeypatch.setenv("HUB_VAR_DIR", str(tmp_path))
    return url


def test_directory_list_and_show_read_the_yaml_before_any_import(database: str) -> None:
    result = runner.invoke(directory_cli.app, ["list", "--type", "camhs"])
    assert result.exit_code == 0, result.output
    assert "2 of 34 organisations from " in result.output
    assert "camhs-songjiang-central" in result.output
    shown = runner.invoke(directory_cli.app, ["show", "street-centre-jiuting"])
    assert json.loads(shown.output)["towns"] == ["jiuting"]
    assert runner.invoke(directory_cli.app, ["show", "nobody"]).exit_code == 1


def test_directory_import_then_list_from_the_database(database: str, tmp_path: Path) -> None:
    edited = tmp_path / "dir.yaml"
    shutil.copy(SAMPLE_DIR, edited)
    edited.write_text(
        edited.read_text(encoding="utf-8").replace("id: school-yexie-school", "id: school-yexie-new"), "utf-8"
    )
    result = runner.invoke(directory_cli.app, ["import", str(edited)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("imported 34 organisations and 17 towns; version sha256:")
    listed = runner.invoke(directory_cli.app, ["list", "--town", "yexie", "--source", "db"])
    assert "from database" in listed.output
    assert "school-yexie-new" in listed.output


def test_directory_import_refuses_an_invalid_file(database: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("towns: []\norganisations:\n  - {id: x, type: bank, name: X}\n", encoding="utf-8")
    result = runner.invoke(directory_cli.app, ["import", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3: unknown agency-type code 'bank' in type" in result.output
