"""One pydantic-settings class per connector process; env prefix QIXIN_CONNECTOR_, nested with "__"."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Transport = Literal["https", "kafka"]


class ConnectorSettings(BaseSettings):
    """Where the hub is, who this connector speaks for, and where its keys and state live.

    Keys come either from files the agency holds (production) or, in demo custody, from the hub's own
    key store (``hub_var_dir``, or ``keystore_dir`` + ``master_key_file``):

    * signing: ``signing_key_file`` (PEM PKCS#8 or 32 raw bytes / base64url of an Ed25519 key), else the
      agency's key in the store;
    * pseudonyms: ``pseudonym_key_file`` (the district's HMAC key, 32+ bytes raw or base64url), else the
      hub's HMAC key in the store, so every agency's pseudonym of a child is the same;
    * sealing for the Kafka transport: ``hub_public_keys_file`` (the JSON of ``hub keys export-public``),
      else the hub's public keys from the store.
    """

    model_config = SettingsConfigDict(
        env_prefix="QIXIN_CONNECTOR_", env_nested_delimiter="__", extra="ignore"
    )

    agency: str = Field("", description="this agency's organisation id (the sender)")
    endpoint: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None
    transport: Transport = "https"
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""

    hub_var_dir: Path | None = None  # demo custody: <dir>/keys and <dir>/master.key
    keystore_dir: Path | None = None
    master_key_file: Path | None = None
    signing_key_file: Path | None = None
    pseudonym_key_file: Path | None = None
    hub_public_keys_file: Path | None = None

    state_dir: Path = Path("var/connectors")  # outbox database, dead letters, reports
    outbox_dir: Path | None = None  # where `pull` hands deliveries over (default <state_dir>/<agency>/inbox)
    config_file: Path | None = None  # agency-specific mapping config (the school's thresholds)

    timeout_s: float = 30.0
    max_attempts: int = 6
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    concurrency: int = 4  # HTTPS requests in flight
    kafka_batch: int = 200  # records produced before waiting for their acknowledgements
    verify_tls: bool = True

    @model_validator(mode="after")
    def _demo_paths(self) -> ConnectorSettings:
        if self.hub_var_dir is not None:
            if self.keystore_dir is None:
                self.keystore_dir = self.hub_var_dir / "keys"
            if self.master_key_file is None:
                self.master_key_file = self.hub_var_dir / "master.key"
        return self

    def outbox_file(self) -> Path:
        return self.state_dir / f"{self.agency}.outbox.sqlite"

    def deadletter_file(self) -> Path:
        return self.state_dir / f"{self.agency}.deadletter.jsonl"

    def his_dir(self) -> Path:
        return self.outbox_dir or self.state_dir / self.agency / "inbox"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
