"""The district's organisation directory as connectors need it: ids, types, names, towns of organisations."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from connectors.common.bundle import Org

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[2] / "routing_rules" / "directory" / "songjiang.yaml"


@dataclass(frozen=True)
class Entry:
    org: Org
    name_en: str
    towns: tuple[str, ...]


def _norm(name: str) -> str:
    return unicodedata.normalize("NFKC", name).replace(" ", "").lower()


class Directory:
    def __init__(self, entries: list[Entry]) -> None:
        self.entries = {e.org.id: e for e in entries}
        self._by_name: dict[str, str] = {}
        for e in entries:
            for name in (e.org.id, e.org.name, e.name_en):
                self._by_name[_norm(name)] = e.org.id
                # 上海市松江二中（初中部） is typed as 松江二中（初中部） or 松江二中 as often as in full
                for prefix in ("上海市", "松江区"):
                    if name.startswith(prefix):
                        self._by_name.setdefault(_norm(name[len(prefix) :]), e.org.id)

    def org(self, org_id: str) -> Org:
        entry = self.entries.get(org_id)
        if entry is None:
            raise KeyError(f"organisation {org_id!r} is not in the directory")
        return entry.org

    def find(self, name: str) -> Org | None:
        org_id = self._by_name.get(_norm(name))
        return self.entries[org_id].org if org_id else None

    def of_type(self, agency_type: str) -> list[Entry]:
        return [e for e in self.entries.values() if e.org.type == agency_type]

    def street_centre_of(self, town: str) -> Org | None:
        return next((e.org for e in self.of_type("street-centre") if town in e.towns), None)


@lru_cache(maxsize=4)
def load_directory(path: Path = DEFAULT_DIRECTORY) -> Directory:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = []
    for raw in document.get("organisations") or []:
        name = raw.get("name") or {}
        towns = raw.get("towns") or []
        entries.append(
            Entry(
                Org(str(raw["id"]), str(raw["type"]), str(name.get("zh") or raw["id"])),
                str(name.get("en") or ""),
                tuple(towns) if isinstance(towns, list) else (str(towns),),
            )
        )
    return Directory(entries)
