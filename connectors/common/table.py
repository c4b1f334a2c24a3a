"""Reading native exports (CSV in UTF-8 or GB18030, XLSX, JSON) into rows keyed by canonical column names."""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TableError(ValueError):
    """The file as a whole cannot be read (encoding, missing required columns, not a table)."""


@dataclass(frozen=True)
class Row:
    """One data row: ``number`` as a spreadsheet shows it (the header is row 1)."""

    number: int
    values: Mapping[str, Any]

    def get(self, column: str) -> Any:
        return self.values.get(column)


def _key(header: str) -> str:
    return re.sub(r"[\s_\-()（）.·]", "", unicodedata.normalize("NFKC", str(header)).lower())


class Columns:
    """Canonical column names with the headers platforms use for them (Chinese and English)."""

    def __init__(self, aliases: Mapping[str, Sequence[str]], required: Sequence[str] = ()) -> None:
        self._by_header: dict[str, str] = {}
        for canonical, names in aliases.items():
            for name in (canonical, *names):
                self._by_header[_key(name)] = canonical
        self.required = tuple(required)

    def resolve(self, headers: Sequence[str]) -> dict[int, str]:
        """Column index -> canonical name; raises TableError naming required columns that are missing."""
        found: dict[int, str] = {}
        for index, header in enumerate(headers):
            canonical = self._by_header.get(_key(header)) if header is not None else None
            if canonical is not None and canonical not in found.values():
                found[index] = canonical
        missing = [c for c in self.required if c not in found.values()]
        if missing:
            raise TableError(
                f"missing column(s): {', '.join(missing)} (headers: {', '.join(map(str, headers))})"
            )
        return found

    def canonical(self, header: str) -> str | None:
        return self._by_header.get(_key(header))


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise TableError("the file is neither UTF-8 nor GB18030 text")


def _csv_rows(path: Path) -> Iterator[list[str]]:
    text = _decode(path.read_bytes())
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",\t;")
    except csv.Error:
        dialect = csv.excel
    yield from csv.reader(io.StringIO(text), dialect)


def _xlsx_rows(path: Path) -> Iterator[list[Any]]:
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = book.worksheets[0]
        for values in sheet.iter_rows(values_only=True):
            yield list(values)
    finally:
        book.close()


def read_table(path: Path, columns: Columns) -> Iterator[Row]:
    """Rows of a CSV or XLSX file; blank rows are skipped (their numbers still count)."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        raw: Iterator[list[Any]] = _xlsx_rows(path)
    elif suffix in (".csv", ".txt", ".tsv"):
        raw = _csv_rows(path)
    else:
        raise TableError(f"{path.name}: not a CSV or XLSX file")
    try:
        headers = next(raw)
    except StopIteration:
        raise TableError(f"{path.name} is empty") from None
    index = columns.resolve([str(h) if h is not None else "" for h in headers])
    for number, values in enumerate(raw, start=2):
        if all(v is None or str(v).strip() == "" for v in values):
            continue
        yield Row(number, {name: values[i] if i < len(values) else None for i, name in index.items()})


def read_json_records(path: Path, list_keys: Sequence[str]) -> tuple[dict[str, Any], list[Any]]:
    """(document, records) of a JSON export: a list, or an object with the list under a ``list_keys`` key."""
    try:
        document = json.loads(_decode(path.read_bytes()))
    except json.JSONDecodeError as exc:
        raise TableError(f"{path.name} is not JSON: {exc}") from None
    if isinstance(document, list):
        return {}, document
    if isinstance(document, dict):
        for key in list_keys:
            if isinstance(document.get(key), list):
                return document, document[key]
    raise TableError(
        f"{path.name}: expected a list of records or an object with one of {', '.join(list_keys)}"
    )


def flatten(record: Mapping[str, Any], columns: Columns, prefix: str = "") -> dict[str, Any]:
    """A nested JSON record as canonical columns: nested keys match as ``parent.child`` or ``child``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            for inner_key, inner in flatten(value, columns, f"{prefix}{key}.").items():
                out.setdefault(inner_key, inner)
            continue
        canonical = columns.canonical(f"{prefix}{key}") or columns.canonical(str(key))
        if canonical is not None and canonical not in out:
            out[canonical] = value
    return out
