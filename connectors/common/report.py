"""What a run tells its operator: the bad-rows report, the dead-letter file, the progress bar, the summary.

The dead-letter file (JSONL, appended) holds what could not be sent, with row number, field, reason
and the opaque record id only: no names, identifiers, phone numbers or Bundle content.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from connectors.common.record import BadRow


@dataclass
class SentRecord:
    record_id: str
    rows: tuple[int, ...]
    kind: str
    referral_id: str | None
    task_id: str | None = None
    new: bool = True  # False: it was already sent by an earlier run (skipped now)


@dataclass
class Report:
    agency: str
    source: str
    transport: str
    dry_run: bool = False
    rows: int = 0
    records: int = 0
    sent: list[SentRecord] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    held: list[BadRow] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    seconds: float = 0.0

    @property
    def new(self) -> int:
        return sum(1 for s in self.sent if s.new)

    @property
    def already(self) -> int:
        return sum(1 for s in self.sent if not s.new)

    def as_dict(self) -> dict[str, Any]:
        return {
            "agency": self.agency,
            "source": self.source,
            "transport": self.transport,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "records": self.records,
            "sent_new": self.new,
            "sent_already": self.already,
            "dead_letters": self.dead_letters,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows / self.seconds, 1) if self.seconds > 0 else None,
            "skipped": self.skipped,
            "sent": [asdict(s) for s in self.sent],
            "bad_rows": [b.as_dict() for b in self.bad_rows],
            "held": [b.as_dict() for b in self.held],
        }

    def summary(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        lines = [
            f"{self.source}: {self.rows} rows, {self.records} records to send; {verb} {self.new} new, "
            f"{self.already} already sent earlier; {len(self.bad_rows)} bad rows; {len(self.held)} held; "
            f"{self.dead_letters} dead letters" + (f"; not eligible: {skipped}" if skipped else "")
        ]
        for bad in self.bad_rows:
            lines.append(f"  bad row {bad.row}: {bad.field}: {bad.reason}")
        for held in self.held:
            lines.append(f"  held row {held.row}: {held.field}: {held.reason}")
        return "\n".join(lines)


class DeadLetters:
    """Appends to ``<state_dir>/<agency>.deadletter.jsonl``."""

    def __init__(self, path: Path, agency: str, source: str) -> None:
        self.path = path
        self._agency = agency
        self._source = source
        self.count = 0

    def write(
        self, *, row: int, field: str, reason: str, code: str, record_id: str | None, kind: str
    ) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "at": datetime.now(UTC).isoformat(),
            "agency": self._agency,
            "source": self._source,
            "kind": kind,
            "row": row,
            "field": field,
            "code": code,
            "reason": reason[:500],
            "record_id": record_id,
        }
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.count += 1


class Progress(Protocol):
    def advance(self, n: int = 1) -> None: ...


class _Quiet:
    def advance(self, n: int = 1) -> None:
        return None


@contextmanager
def progress(total: int, label: str, *, enabled: bool | None = None) -> Iterator[Progress]:
    """A progress bar on stderr for long files; silent when stderr is not a terminal."""
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show or total < 50:
        yield _Quiet()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=total)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                bar.advance(task, n)

        yield _Bar()
