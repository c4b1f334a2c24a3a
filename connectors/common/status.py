"""Status updates an agency's own system exports (CSV/XLSX/JSON) -> task status changes for the hub.

Columns: 任务编号 (the hub's task id, as `pull` handed it over), 状态 (received 已接收, accepted 已受理,
rejected 不予受理, in-progress 已首次联系/跟进中, on-hold 暂停, completed 已结案, failed 未完成,
cancelled 已取消), optional 业务状态 (已预约 appointment-booked, 未到 no-show, 待随访 follow-up-due),
原因 (required for rejected/failed/cancelled), 反馈 (required for completed: the feedback to the referrer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.common.record import BadRow, Item, Parsed, StatusChange, record_id
from connectors.common.table import Columns, TableError, flatten, read_json_records, read_table
from connectors.common.value import text

STATUS_COLUMNS = Columns(
    {
        "task_id": ["任务编号", "任务ID", "task", "task id"],
        "referral_id": ["转介编号", "referral", "referral id"],
        "status": ["状态", "处理状态", "status"],
        "business_status": ["业务状态", "business status"],
        "reason": ["原因", "不予受理原因", "reason"],
        "feedback": ["反馈", "反馈意见", "处理结果", "feedback"],
    },
    required=("task_id", "status"),
)
STATUS_LABELS = {
    "已接收": "received",
    "已签收": "received",
    "已受理": "accepted",
    "接收转介": "accepted",
    "不予受理": "rejected",
    "拒绝": "rejected",
    "退回": "rejected",
    "已首次联系": "in-progress",
    "首次联系": "in-progress",
    "跟进中": "in-progress",
    "干预中": "in-progress",
    "暂停": "on-hold",
    "已结案": "completed",
    "结案": "completed",
    "已完成": "completed",
    "未完成": "failed",
    "已取消": "cancelled",
    "取消": "cancelled",
}
BUSINESS_LABELS = {
    "已预约": "appointment-booked",
    "预约": "appointment-booked",
    "未到": "no-show",
    "爽约": "no-show",
    "已反馈": "feedback-sent",
    "待随访": "follow-up-due",
}
STATUSES = frozenset(
    {"received", "accepted", "rejected", "in-progress", "on-hold", "completed", "failed", "cancelled"}
)
BUSINESS = frozenset({"delivered", "appointment-booked", "no-show", "feedback-sent", "follow-up-due"})


def change_of(values: dict[str, Any]) -> StatusChange | BadRow:
    """A StatusChange from one row's canonical values, or the BadRow (row 0: the caller sets it)."""
    task_id = text(values.get("task_id"))
    if not task_id:
        return BadRow(0, "任务编号", "the task id is empty")
    raw = text(values.get("status"))
    status = STATUS_LABELS.get(raw, raw.lower())
    if status not in STATUSES:
        return BadRow(0, "状态", f"status {raw!r} is not one of {', '.join(sorted(STATUSES))} (或中文名称)")
    raw_business = text(values.get("business_status"))
    business = BUSINESS_LABELS.get(raw_business, raw_business.lower()) or None
    if business is not None and business not in BUSINESS:
        return BadRow(0, "业务状态", f"business status {raw_business!r} is not known")
    reason = text(values.get("reason")) or None
    feedback = text(values.get("feedback")) or None
    if status in ("rejected", "failed", "cancelled") and not reason:
        return BadRow(0, "原因", f"moving a referral to {status} needs a reason")
    if status == "completed" and not feedback:
        return BadRow(0, "反馈", "a referral completes only with feedback to the referrer")
    return StatusChange(task_id, status, reason, business, feedback, text(values.get("referral_id")) or None)


def _add(parsed: Parsed, agency: str, number: int, values: dict[str, Any]) -> None:
    parsed.rows += 1
    result = change_of(values)
    if isinstance(result, BadRow):
        parsed.bad.append(BadRow(number, result.field, result.reason))
        return
    rid = record_id(agency, "status", result.task_id, result.status, result.business_status or "")
    parsed.items.append(Item(rid, (number,), change=result))


def read_status_updates(path: Path, agency: str) -> Parsed:
    """Status updates from a CSV/XLSX table or a JSON list (``updates``/``records``)."""
    parsed = Parsed()
    if path.suffix.lower() == ".json":
        _, records = read_json_records(path, ("updates", "status_updates", "records", "items"))
        for number, record in enumerate(records, start=1):
            if not isinstance(record, dict):
                parsed.rows += 1
                parsed.bad.append(BadRow(number, "$", "a status update is a JSON object"))
                continue
            _add(parsed, agency, number, flatten(record, STATUS_COLUMNS))
        return parsed
    for row in read_table(path, STATUS_COLUMNS):
        _add(parsed, agency, row.number, dict(row.values))
    return parsed


def is_status_file(path: Path) -> bool:
    """Whether a file holds status updates (it has a task-id column or list) rather than cases."""
    if path.suffix.lower() == ".json":
        try:
            document, records = read_json_records(
                path, ("updates", "status_updates", "records", "items", "cases", "calls")
            )
        except TableError:
            return False
        if any(k in document for k in ("updates", "status_updates")):
            return True
        first = next((r for r in records if isinstance(r, dict)), {})
        return "task_id" in flatten(first, STATUS_COLUMNS)
    try:
        next(iter(read_table(path, STATUS_COLUMNS)), None)
    except TableError:
        return False
    return True
