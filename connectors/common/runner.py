"""Running an import or a pull: parsed records -> outbox -> transport -> report, resumable at any point."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.common.bundle import Org, build_referral, encode
from connectors.common.outbox import Handed, Outbox
from connectors.common.record import BadRow, Item, Parsed
from connectors.common.report import DeadLetters, Report, SentRecord, progress
from connectors.common.settings import ConnectorSettings
from connectors.common.transport import HttpsTransport, KafkaTransport, Outcome, Outgoing, TransportFailed
from schemas.profile import ProfileError, validate_referral


@dataclass
class Context:
    """What a run needs; transports are None in a dry run."""

    settings: ConnectorSettings
    sender: Org
    outbox: Outbox | None
    https: HttpsTransport | None = None
    kafka: KafkaTransport | None = None
    out_dir: Path | None = None  # dry run: write the Bundles here
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    show_progress: bool | None = None


@dataclass
class _Prepared:
    item: Item
    outgoing: Outgoing | None = None


def _first_row(item: Item) -> int:
    return item.rows[0] if item.rows else 0


def _bad_from_outcome(item: Item, outcome: Outcome) -> list[BadRow]:
    row = _first_row(item)
    if outcome.errors:
        return [
            BadRow(
                row,
                str(e.get("path") or e.get("field") or "$"),
                f"{e.get('rule') or outcome.code}: {e.get('message') or outcome.detail}",
                item.record_id,
            )
            for e in outcome.errors
        ]
    return [BadRow(row, "$", f"{outcome.code}: {outcome.detail}", item.record_id)]


class _Run:
    def __init__(self, parsed: Parsed, ctx: Context, source: str, dry_run: bool) -> None:
        self.parsed = parsed
        self.ctx = ctx
        self.dry_run = dry_run
        transport = "none" if dry_run else ctx.settings.transport
        self.report = Report(ctx.settings.agency, source, transport, dry_run=dry_run)
        self.report.rows = parsed.rows
        self.report.records = len(parsed.items)
        self.report.bad_rows = list(parsed.bad)
        self.report.held = list(parsed.held)
        self.report.skipped = dict(parsed.skipped)
        self.dead = DeadLetters(ctx.settings.deadletter_file(), ctx.settings.agency, source)
        self.source = source

    # -- outcomes ------------------------------------------------------------------------------------
    def _sent(
        self, item: Item, referral_id: str | None, task_id: str | None = None, new: bool = True
    ) -> None:
        self.report.sent.append(SentRecord(item.record_id, item.rows, item.kind, referral_id, task_id, new))

    def _fail(self, item: Item, outcome: Outcome) -> None:
        outbox = self.ctx.outbox
        assert outbox is not None
        outbox.mark_failed(item.record_id, f"{outcome.code}: {outcome.detail}")
        if not outcome.exhausted:
            self.report.bad_rows.extend(_bad_from_outcome(item, outcome))
        fields = ",".join(str(e.get("path") or "") for e in outcome.errors) or "$"
        self.dead.write(
            row=_first_row(item),
            field=fields,
            reason=outcome.detail or outcome.code,
            code=outcome.code + (" (retries exhausted)" if outcome.exhausted else ""),
            record_id=item.record_id,
            kind=item.kind,
        )

    def _settle(self, prepared: _Prepared, outcome: Outcome) -> None:
        item = prepared.item
        outbox = self.ctx.outbox
        assert outbox is not None
        if outcome.ok:
            task_id = item.change.task_id if item.change else None
            outbox.mark_sent(item.record_id, referral_id=outcome.referral_id, task_id=task_id)
            self._sent(item, outcome.referral_id, task_id, new=not outcome.already)
        else:
            self._fail(item, outcome)

    # -- preparing -----------------------------------------------------------------------------------
    def _prepare(self, item: Item) -> _Prepared | None:
        """Mark pending and build the exact bytes; None when the record is done or cannot be built."""
        outbox = self.ctx.outbox
        state = outbox.get(item.record_id) if outbox is not None else None
        if state is not None and state.state == "sent":
            self._sent(item, state.referral_id, state.task_id, new=False)
            return None
        if item.change is not None:
            if not self.dry_run and outbox is not None:
                outbox.begin(item.record_id, "status", None, self.source, _first_row(item), self.ctx.now())
            return _Prepared(item)
        draft = item.draft
        if self.dry_run or outbox is None:
            authored = state.first_attempt_at if state is not None else self.ctx.now()
        else:
            authored = outbox.begin(
                item.record_id, "referral", draft.message_id, self.source, _first_row(item), self.ctx.now()
            )
        bundle = build_referral(draft, authored)
        body = encode(bundle)
        try:
            validated = validate_referral(bundle, size=len(body), now=max(self.ctx.now(), authored))
        except ProfileError as exc:
            outcome = Outcome(
                False,
                code="profile-invalid",
                detail=str(exc),
                errors=tuple(i.as_dict() for i in exc.issues),
            )
            if self.dry_run or outbox is None:
                self.report.bad_rows.extend(_bad_from_outcome(item, outcome))
            else:
                self._fail(item, outcome)
            return None
        if self.dry_run and self.ctx.out_dir is not None:
            self.ctx.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.ctx.out_dir / f"{draft.message_id}.json"
            path.write_text(json.dumps(bundle, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return _Prepared(item, Outgoing(item.record_id, draft.message_id, body, validated.referral_id))

    # -- sending -------------------------------------------------------------------------------------
    def _send_https(self, window: list[_Prepared], pool: ThreadPoolExecutor) -> None:
        https = self.ctx.https
        assert https is not None

        def one(p: _Prepared) -> Outcome:
            assert p.outgoing is not None
            return https.submit(p.outgoing)

        # Referrals are independent and go concurrently; status changes of one Task must keep their
        # order (received before accepted), so they go one after another.
        referrals = [p for p in window if p.outgoing is not None]
        for prepared, outcome in zip(referrals, pool.map(one, referrals), strict=True):
            self._settle(prepared, outcome)
        for prepared in window:
            if prepared.item.change is not None:
                self._settle(prepared, https.change_status(prepared.item.change))

    def _send_kafka(self, window: list[_Prepared]) -> None:
        kafka, https = self.ctx.kafka, self.ctx.https
        assert kafka is not None
        referrals = [p for p in window if p.outgoing is not None]
        outcomes = kafka.submit_many([p.outgoing for p in referrals if p.outgoing is not None])
        assert self.ctx.outbox is not None
        with self.ctx.outbox.batch():
            for prepared, outcome in zip(referrals, outcomes, strict=True):
                self._settle(prepared, outcome)
        for p in window:
            if p.item.change is not None:
                if https is None:
                    self._settle(
                        p, Outcome(False, code="https-required", detail="status changes go over HTTPS")
                    )
                else:
                    self._settle(p, https.change_status(p.item.change))

    def run(self) -> Report:
        started = time.perf_counter()
        settings = self.ctx.settings
        size = max(1, settings.kafka_batch if self.ctx.kafka is not None else settings.concurrency * 8)
        with (
            progress(len(self.parsed.items), self.source, enabled=self.ctx.show_progress) as bar,
            ThreadPoolExecutor(max_workers=max(1, settings.concurrency)) as pool,
        ):
            for chunk in _chunks(self.parsed.items, size):
                window = [p for p in (self._prepare(item) for item in chunk) if p is not None]
                if self.dry_run:
                    for p in window:
                        rid = p.outgoing.referral_id if p.outgoing else None
                        task = p.item.change.task_id if p.item.change else None
                        self._sent(p.item, rid, task)
                elif window and self.ctx.kafka is not None:
                    self._send_kafka(window)
                elif window:
                    self._send_https(window, pool)
                bar.advance(len(chunk))
        self.report.dead_letters = self.dead.count
        self.report.seconds = time.perf_counter() - started
        return self.report


def _chunks(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_import(parsed: Parsed, ctx: Context, *, source: str, dry_run: bool = False) -> Report:
    return _Run(parsed, ctx, source, dry_run).run()


# --------------------------------------------------------------------------------------------------
# Pull: the agency's deliveries handed to its own system


@dataclass
class PullReport:
    agency: str
    handed: list[dict[str, Any]] = field(default_factory=list)
    already: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"agency": self.agency, "handed": self.handed, "already": self.already, "failed": self.failed}

    def summary(self) -> str:
        return (
            f"{self.agency}: handed {len(self.handed)} new deliveries, {self.already} handed earlier, "
            f"{len(self.failed)} failed"
        )


# (inbox item, opened content) -> (files written, HL7 control id or None, student pseudonym or None)
Handler = Callable[[dict[str, Any], dict[str, Any]], tuple[list[str], str | None, str | None]]


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def pseudonym_of(content: dict[str, Any] | None) -> str | None:
    from schemas.canonical import NS_PSEUDONYM

    for entry in (content or {}).get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "Patient":
            for ident in resource.get("identifier") or []:
                if ident.get("system") == NS_PSEUDONYM:
                    return str(ident.get("value"))
    return None


def fhir_handler(directory: Path, recipient: Org | None = None) -> Handler:
    """Write each delivery as ``<task id>.json``: the hub's delivery facts and the minimised Bundle."""

    def handle(item: dict[str, Any], opened: dict[str, Any]) -> tuple[list[str], str | None, str | None]:
        path = directory / f"{item['task_id']}.json"
        document = {"delivery": item, "content": opened.get("content")}
        write_atomic(path, json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8"))
        return [path.name], None, pseudonym_of(opened.get("content"))

    return handle


def run_pull(ctx: Context, handler: Handler, *, acknowledge: bool = True) -> PullReport:
    """Hand every new delivery in the inbox to the agency's system, then (optionally) acknowledge it."""
    https, outbox = ctx.https, ctx.outbox
    assert https is not None
    assert outbox is not None
    report = PullReport(ctx.settings.agency)
    from connectors.common.record import StatusChange

    for item in https.inbox():
        task_id = str(item["task_id"])
        if outbox.handed(task_id) is not None:
            report.already += 1
            continue
        opened = https.get_json(f"/v1/tasks/{task_id}/content")
        if isinstance(opened, Outcome):
            report.failed.append({"task_id": task_id, "code": opened.code, "detail": opened.detail})
            continue
        files, control_id, pseudonym = handler(item, opened)
        outbox.record_handed(
            Handed(
                task_id,
                str(item["referral_id"]),
                item.get("delivery_id"),
                item.get("sender_org"),
                pseudonym,
                control_id,
                ctx.now(),
            ),
            files,
        )
        entry = {"task_id": task_id, "referral_id": item["referral_id"], "files": files}
        if acknowledge and item.get("status") == "requested":
            outcome = https.change_status(
                StatusChange(task_id, "received", referral_id=str(item["referral_id"]))
            )
            entry["acknowledged"] = outcome.ok
        report.handed.append(entry)
    return report


__all__ = ["Context", "PullReport", "TransportFailed", "fhir_handler", "run_import", "run_pull"]
