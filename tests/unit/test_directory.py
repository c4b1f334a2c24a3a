"""The organisation directory: the Songjiang sample, resolution, on-duty rota, errors, the SQL copy."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.adapters.directory import (
    DirectoryInvalid,
    SqlDirectoryRepository,
    directory_as_data,
    directory_from_data,
    load_directory,
    parse_directory,
)
from hub.domain.directory import Directory

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "routing_rules" / "directory" / "songjiang.yaml"
CST = timezone(timedelta(hours=8))
STREETS = ["yueyang", "yongfeng", "fangsong", "zhongshan", "guangfulin", "jiuliting"]
TOWNS = [
    "sijing",
    "sheshan",
    "chedun",
    "xinqiao",
    "dongjing",
    "jiuting",
    "maogang",
    "shihudang",
    "xinbang",
    "yexie",
    "xiaokunshan",
]


@pytest.fixture(scope="module")
def directory() -> Directory:
    return load_directory(SAMPLE)


def test_the_sample_covers_every_street_and_town_with_a_centre(directory: Directory) -> None:
    assert [t.code for t in directory.towns] == STREETS + TOWNS
    assert {t.kind for t in directory.towns if t.code in STREETS} == {"street"}
    for code in STREETS + TOWNS:
        [centre] = directory.resolve("street-centre", town=code).candidates
        assert centre.id == f"street-centre-{code}"
        assert "未成年人心理健康成长辅导中心" in centre.name_zh
    for org_id in [
        "district-centre",
        "district-office",
        "police-songjiang",
        "procuratorate-songjiang",
        "civil-affairs-songjiang",
        "camhs-songjiang-mhc",
        "camhs-songjiang-central",
        "school-songjiang-no2-middle",
    ]:
        assert directory.get(org_id) is not None, org_id
    assert len(directory.of_type("school")) >= 5
    # escalation contacts are roles with placeholder phones, never names
    for org in directory.organisations:
        assert org.escalation
        assert all(c.phone.startswith("021-0000-") for c in org.escalation)


@pytest.mark.parametrize(
    ("when", "on_duty"),
    [
        (datetime(2026, 11, 30, 10, 0, tzinfo=CST), "camhs-songjiang-mhc"),  # Monday daytime
        (datetime(2026, 11, 30, 17, 0, tzinfo=CST), "camhs-songjiang-central"),  # Monday evening
        (datetime(2026, 12, 1, 7, 59, tzinfo=CST), "camhs-songjiang-central"),  # Tuesday before 08:00
        (datetime(2026, 12, 5, 12, 0, tzinfo=CST), "camhs-songjiang-central"),  # Saturday
        (datetime(2026, 10, 1, 10, 0, tzinfo=CST), "camhs-songjiang-central"),  # National Day: dated rota
        (datetime(2026, 10, 8, 10, 0, tzinfo=CST), "camhs-songjiang-mhc"),  # back to the weekly rota
        (datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc), "camhs-songjiang-mhc"),  # 10:00 in Shanghai  # noqa: UP017
    ],
)
def test_the_camhs_on_duty_follows_the_rota(directory: Directory, when: datetime, on_duty: str) -> None:
    resolution = directory.resolve("camhs", town="sijing", at=when, on_duty=True)
    assert resolution.candidates[0].id == on_duty
    assert len(resolution.candidates) == 2  # the other clinic stays next in the pathway


def test_resolution_prefers_the_requested_organisation(directory: Directory) -> None:
    ranked = directory.resolve("camhs", town="yexie", requested="camhs-songjiang-central").candidates
    assert [o.id for o in ranked] == ["camhs-songjiang-central", "camhs-songjiang-mhc"]


def test_schools_resolve_only_to_the_students_school(directory: Directory) -> None:
    assert [o.id for o in directory.resolve("school", school="school-sijing-middle").candidates] == [
        "school-sijing-middle"
    ]
    missing = directory.resolve("school", school="school-unknown")
    assert missing.candidates == ()
    assert "not in the directory" in missing.note
    assert directory.resolve("street-centre", town=None).note == "the student's town is unknown"


BROKEN = """\
towns:
  - {code: yueyang, zh: 岳阳街道, en: Yueyang}
  - {code: yueyang, zh: 岳阳街道, en: Yueyang}
organisations:
  - id: camhs-x
    type: hospital
    name: {zh: 某院, en: Some hospital}
  - id: street-centre-nowhere
    type: street-centre
    name: {zh: 某中心, en: Some centre}
    towns: [nowhere]
  - id: camhs-y
    type: camhs
    name: {zh: 乙, en: Y}
    on_duty:
      - {days: [mon], from: "17:00", to: "08:00"}
  - id: camhs-y
    type: camhs
    name: {zh: 乙, en: Y}
    phone: "123"
"""


def test_directory_errors_name_file_and_line() -> None:
    directory, issues = parse_directory(BROKEN, "dir.yaml")
    assert directory is None
    assert [str(i) for i in issues] == [
        "dir.yaml:3: duplicate town 'yueyang' (first at line 2)",
        "dir.yaml:6: unknown agency-type code 'hospital' in type",
        "dir.yaml:8: a street-centre names the town(s) it is in or serves ('towns')",
        "dir.yaml:11: unknown town code 'nowhere' in towns",
        "dir.yaml:16: an on-duty slot ends after it starts (split a night shift at midnight)",
        "dir.yaml:17: duplicate organisation id 'camhs-y' (first at line 12)",
        "dir.yaml:20: unknown field 'phone' in an organisation; allowed: id, type, name, towns, queues, "
        "public_keys, escalation, on_duty, active",
    ]


def test_the_version_ignores_comments_and_follows_content(directory: Directory) -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    again, _ = parse_directory("# a comment\n" + text, "x.yaml")
    changed, _ = parse_directory(text.replace('"021-0000-3650"', '"021-0000-3651"'), "x.yaml")
    assert again is not None
    assert changed is not None
    assert again.version == directory.version != changed.version


def test_plain_data_round_trip(directory: Directory) -> None:
    assert directory_from_data(directory_as_data(directory)).version == directory.version
    with pytest.raises(DirectoryInvalid):
        directory_from_data({"towns": [], "organisations": [{"id": "x", "type": "bank", "name": "x"}]})


def test_the_database_copy_round_trips_and_replaces(tmp_path: Path, directory: Directory) -> None:
    repo = SqlDirectoryRepository(sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}"))
    assert repo.load() is None
    first = repo.replace(directory, source="songjiang.yaml")
    assert (first.organisations, first.towns, first.previous_version) == (34, 17, None)
    stored = repo.load()
    assert stored is not None
    assert stored.version == directory.version
    assert stored.get("camhs-songjiang-central") == directory.get("camhs-songjiang-central")
    smaller = Directory(towns=directory.towns, organisations=directory.organisations[:5])
    second = repo.replace(smaller)
    assert second.previous_version == directory.version
    reloaded = repo.load()
    assert reloaded is not None
    assert len(reloaded.organisations) == 5
    assert repo.meta()["version"] == smaller.version
