"""Golden files for connector tests: native file in -> the Bundles (and report) the connector produces.

Everything that could vary is fixed: the pseudonym key, today, the authoring time. Each referral Bundle
is also checked against the profile. ``QIXIN_UPDATE_GOLDEN=1`` rewrites the golden files.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from pathlib import Path
from typing import Any

from connectors.common.agency import AgencyConnector, ReadContext
from connectors.common.bundle import Org, StatusMessage, build_referral, build_status
from connectors.common.directory import load_directory
from connectors.common.record import Parsed
from connectors.common.value import SHANGHAI
from hub.adapters.crypto import HmacPseudonymiser, key_id_for_secret
from schemas.profile import validate_message, validate_referral

TODAY = date(2026, 11, 30)
AUTHORED = datetime(2026, 11, 30, 9, 0, tzinfo=SHANGHAI)
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=SHANGHAI)
PSEUDONYM_KEY = b"qixin-golden-pseudonym-key-32by!"


def pseudonymiser() -> HmacPseudonymiser:
    return HmacPseudonymiser([(key_id_for_secret(PSEUDONYM_KEY), PSEUDONYM_KEY)])


def read_context(sender_id: str, agency_type: str, outbox: Any = None) -> ReadContext:
    directory = load_directory()
    sender = directory.org(sender_id) if sender_id in directory.entries else Org(sender_id, agency_type)
    p = pseudonymiser()
    return ReadContext(
        sender, directory, lambda raw, issuer: p.pseudonym(raw, issuer=issuer), TODAY, None, outbox
    )


def render(parsed: Parsed, sender: Org) -> dict[str, Any]:
    """The golden document of a parse: the report's parts and every Bundle, profile-checked."""
    records: list[dict[str, Any]] = []
    for item in parsed.items:
        if item.draft is not None:
            bundle = build_referral(item.draft, AUTHORED)
            validated = validate_referral(bundle, now=NOW)
            records.append(
                {
                    "record_id": item.record_id,
                    "rows": list(item.rows),
                    "referral_id": validated.referral_id,
                    "bundle": bundle,
                }
            )
            continue
        change = item.change
        assert change is not None
        entry: dict[str, Any] = {
            "record_id": item.record_id,
            "rows": list(item.rows),
            "status": change.body(),
        }
        entry["task_id"] = change.task_id
        if change.referral_id:
            bundle = build_status(
                StatusMessage(
                    sender=sender,
                    message_id=f"st-{item.record_id}",
                    task_id=change.task_id,
                    referral_id=change.referral_id,
                    status=change.status,
                    at=AUTHORED,
                    business_status=change.business_status,
                    reason=change.reason,
                )
            )
            validate_message(bundle, now=NOW)
            entry["bundle"] = bundle
        records.append(entry)
    return {
        "rows": parsed.rows,
        "bad_rows": [b.as_dict() for b in parsed.bad],
        "held": [b.as_dict() for b in parsed.held],
        "skipped": parsed.skipped,
        "records": records,
    }


def check(connector: AgencyConnector, sample: Path, sender_id: str, outbox: Any = None) -> dict[str, Any]:
    """Parse ``sample`` and compare with ``samples/golden/<name>.json`` (or write it when updating)."""
    ctx = read_context(sender_id, connector.agency_type, outbox)
    document = render(connector.read(sample, ctx), ctx.sender)
    golden = sample.parent / "golden" / f"{sample.name}.json"
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if os.environ.get("QIXIN_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}: run with QIXIN_UPDATE_GOLDEN=1 and review it"
    expected = json.loads(golden.read_text(encoding="utf-8"))
    assert document == expected, f"{sample.name} differs from {golden}; QIXIN_UPDATE_GOLDEN=1 to accept"
    return document
