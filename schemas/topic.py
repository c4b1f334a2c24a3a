"""The one catalogue of Kafka topics: names, partitioning, retention and compaction."""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 24 * 3600 * 1000
# The largest record any topic takes (topic config max.message.bytes, and every producer's
# max_request_size). The profile admits Bundles of up to 1,000,000 bytes; sealed and base64url'd
# inside an intake envelope that is ≈ 1.34 MB, and a dead letter carries such a record again.
# Kafka's own default (1 MiB) would refuse Bundles over ≈ 780 KB.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    description: str
    retention_ms: int = 30 * DAY_MS
    compacted: bool = False
    partitions: int | None = None  # None -> the configured default
    min_insync_replicas: int | None = None

    def configs(self, replication_factor: int, max_message_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, str]:
        cfg = {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": "compact" if self.compacted else "delete",
            "max.message.bytes": str(max_message_bytes),
        }
        # With 3 replicas, acks=all means "at least 2 have it"; with 1 replica, 1.
        isr = self.min_insync_replicas or (2 if replication_factor >= 3 else 1)
        cfg["min.insync.replicas"] = str(isr)
        return cfg


REFERRALS_INBOUND = TopicSpec(
    "referrals.inbound", "Connector submissions straight to Kafka (sealed for the hub, signed)"
)
REFERRALS_SUBMITTED = TopicSpec("referrals.submitted", "Bundles accepted at the edge (sealed for the hub)")
DELIVERIES_CREATED = TopicSpec("deliveries.created", "One minimised, sealed copy per recipient")
TASKS_STATUS_CHANGED = TopicSpec("tasks.status-changed", "Accepted lifecycle transitions")
DELIVERIES_OPENED = TopicSpec("deliveries.opened", "Access notices: a recipient opened a delivery")
DELIVERIES_WITHDRAWN = TopicSpec("deliveries.withdrawn", "Unopened deliveries withdrawn (keys destroyed)")
SLA_ESCALATIONS = TopicSpec("sla.escalations", "SLA reminders and escalations")
FOLLOWUPS_CHANGED = TopicSpec("followups.changed", "Follow-up visits scheduled and recorded")
CONSENTS_CHANGED = TopicSpec("consents.changed", "Consent given, updated or revoked")
# Audit and disclosure records must be kept at least 3 years (DESIGN §6).
AUDIT_EVENTS = TopicSpec(
    "audit.events", "BALP-style audit events", retention_ms=3 * 366 * DAY_MS, partitions=1
)
DEADLETTERS = TopicSpec(
    "deadletters", "Records that could not be processed, with reason", retention_ms=90 * DAY_MS
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    REFERRALS_INBOUND,
    REFERRALS_SUBMITTED,
    DELIVERIES_CREATED,
    TASKS_STATUS_CHANGED,
    DELIVERIES_OPENED,
    DELIVERIES_WITHDRAWN,
    SLA_ESCALATIONS,
    FOLLOWUPS_CHANGED,
    CONSENTS_CHANGED,
    AUDIT_EVENTS,
    DEADLETTERS,
)
