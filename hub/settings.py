"""One pydantic-settings tree for every process; env prefix HUB_, nested sections with "__"."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topic import MAX_MESSAGE_BYTES

REPO_ROOT = Path(__file__).resolve().parent.parent


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""  # tests isolate by prefix; production leaves it empty
    partitions: int = 6
    replication_factor: int = 1
    # The 16 KB producer default caps loopback throughput; 256 KB batches with a small linger keep
    # latency low at 100 msg/s and let bursts fill batches.
    batch_size: int = 262_144
    linger_ms: int = 5
    # The API's producer: how long a request waits for the broker's acknowledgement (or, while the
    # broker is unreachable, for a connection) before it answers 503 broker-unavailable with
    # Retry-After. Nothing is answered 202 unless acknowledged.
    publish_timeout_s: float = Field(default=10.0, gt=0)
    # The largest record: topics' max.message.bytes and the producers' max_request_size (and the
    # consumers' fetch size). See schemas.topic.MAX_MESSAGE_BYTES for why not Kafka's 1 MiB.
    max_message_bytes: int = Field(default=MAX_MESSAGE_BYTES, ge=1_048_576)
    # Where `hub kafka start` keeps jars, data and pid files (ignored by git).
    local_port: int = 9092


class DatabaseSettings(BaseModel):
    url: str = ""  # empty -> SQLite file under var/ (the embedded default)
    echo: bool = False


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 2_000_000
    # Submissions must carry the sender's Ed25519 signature (X-Qixin-Signature) over the exact body.
    require_signatures: bool = True
    # Per agency, per API process: a token bucket of `submit_burst` refilled at `submit_rate_per_s`.
    submit_rate_per_s: float = 50.0
    submit_burst: int = 200


class AuthSettings(BaseModel):
    """Staff sign-in: session lifetime, login throttling, cookie flags."""

    session_idle_minutes: int = 30
    session_hours: int = 12
    login_max_failures: int = 5
    login_window_minutes: int = 15
    # "auto": Secure when the request came over HTTPS (directly or via X-Forwarded-Proto).
    cookie_secure: str = "auto"  # auto | always | never


WorkerRole = Literal["all", "routing", "downstream"]
WORKER_ROLES: tuple[str, ...] = get_args(WorkerRole)


class WorkerSettings(BaseModel):
    app_id: str = "qixin-hub"
    web_port: int = 6066
    log_level: str = "warn"
    # Prometheus /metrics of a worker on loopback; 0 turns it off (several workers on one host need
    # one port each).
    metrics_port: int = 9464
    # How long the audit chain step lets audit events gather once they flow: one chain transaction
    # per batch. Audit rows are not on a referral's way to its recipients; at 100 referrals/s
    # 0.5 s instead of 0.05 s saved about 0.03 cores (bench/README.md).
    audit_linger_s: float = Field(default=0.5, ge=0, le=5)
    # How long the routing step lets referrals gather once they flow (one transaction and one wait
    # for the broker per batch); a lone referral after a pause goes at once.
    route_linger_s: float = Field(default=0.005, ge=0, le=1)
    # Which stream steps this process runs. Each role is a consumer group of its own, and several
    # processes of one role share its partitions (DESIGN §4).
    #   all         every step (the default; `make up` runs one such worker)
    #   routing     intake and routing: from a submission to the recipients' inboxes
    #   downstream  every other step: status changes (and re-routing after a decline), openings,
    #               SLA monitor and escalations, follow-ups, consent changes, the audit chain
    # A routing process then spends nothing on work off a referral's way to its inbox; on two cores
    # p99 POST -> inbox at 100/s fell by a quarter to a half against two "all" workers, and the
    # workers' CPU per referral by ~1 ms (bench/README.md, round 7).
    role: WorkerRole = "all"
    # How this worker's consumer fetches: the broker answers a fetch once fetch_min_bytes are there
    # or fetch_max_wait_ms have passed. Unset: the role's default. A downstream worker waits up to
    # 200 ms for 1 MiB: its steps are off a referral's way to the inbox, and at 100 referrals/s it
    # then cost half the CPU (bench/README.md, round 8). The others take each record as it comes
    # (1 byte; faust's 1.5 s wait only matters when nothing arrives).
    fetch_max_wait_ms: int | None = Field(default=None, ge=0, le=30_000)
    fetch_min_bytes: int | None = Field(default=None, ge=1)

    def fetch_tuning(self) -> tuple[int, int]:
        """(fetch_max_wait_ms, fetch_min_bytes) for this worker's consumer."""
        wait, least = (200, 1 << 20) if self.role == "downstream" else (1500, 1)
        return (
            wait if self.fetch_max_wait_ms is None else self.fetch_max_wait_ms,
            least if self.fetch_min_bytes is None else self.fetch_min_bytes,
        )


class KeySettings(BaseModel):
    # Empty -> <var_dir>/keys (set when Settings is built).
    store_dir: Path = Path()
    master_key: SecretStr | None = None  # else read from master_key_file
    master_key_file: Path | None = None
    # Demo custody: the hub's store also holds organisations' keys and creates them on first use.
    # Production turns this off and registers each organisation's public keys in the directory.
    demo_custody: bool = True


class RulesSettings(BaseModel):
    dir: Path = REPO_ROOT / "routing_rules"
    directory_file: Path = REPO_ROOT / "routing_rules" / "directory" / "songjiang.yaml"
    # Working-day overrides on top of the chinesecalendar library (swapped weekends, local closures).
    calendar_file: Path = REPO_ROOT / "routing_rules" / "calendar" / "workdays.yaml"
    # How often a worker looks for edited rule files (hot reload keeps the last valid set on errors).
    reload_seconds: float = 10.0


class SlaSettings(BaseModel):
    check_seconds: float = 30.0  # how often workers look for due reminders and escalations
    reminder_fraction: float = 0.75  # remind the owner once this share of a deadline's window passed
    followup_offsets_days: list[float] = Field(default_factory=lambda: [14.0, 30.0, 90.0])


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", env_nested_delimiter="__", extra="ignore")

    var_dir: Path = REPO_ROOT / "var"
    # HUB_DATABASE_URL is the documented name; the nested form HUB_DATABASE__URL also works.
    database_url: str = ""
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    sla: SlaSettings = Field(default_factory=SlaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    # The API's and the worker's garbage-collector tuning (hub/cli/heap.py); false: the interpreter's.
    tune_gc: bool = True

    @model_validator(mode="after")
    def _derived_paths(self) -> Settings:
        if self.keys.store_dir == Path():
            self.keys.store_dir = self.var_dir / "keys"
        return self

    def resolved_database_url(self) -> str:
        url = self.database_url or self.database.url
        if url:
            return url
        self.var_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.var_dir / 'hub.db'}"

    def topic(self, name: str) -> str:
        return f"{self.kafka.topic_prefix}{name}"


def load_settings() -> Settings:
    """Build settings from the environment when a process starts (never at import)."""
    return Settings()
