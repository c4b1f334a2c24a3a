#!/usr/bin/env bash
# The README's test command: installs what is missing, starts a real Kafka broker and a real
# PostgreSQL on loopback, runs the static checks and the whole suite, and stops what it started.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
t0=$(date +%s)

bash scripts/setup.sh
bash infra/kafka/kafka.sh fetch
bash infra/postgres/pg.sh install
bash scripts/browser.sh install

export KAFKA_PORT="${QIXIN_TEST_KAFKA_PORT:-39092}"
export PGPORT="${QIXIN_TEST_PG_PORT:-55433}"
export QIXIN_KAFKA_MODE_TAG=test
started_kafka=0
started_pg=0
cleanup() {
  if [[ $started_kafka == 1 ]]; then bash infra/kafka/kafka.sh stop || true; fi
  if [[ $started_pg == 1 ]]; then bash infra/postgres/pg.sh stop || true; fi
}
trap cleanup EXIT
if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
  if ! bash infra/kafka/kafka.sh status >/dev/null 2>&1; then started_kafka=1; fi
  bash infra/kafka/kafka.sh start
  KAFKA_BOOTSTRAP="$(bash infra/kafka/kafka.sh bootstrap | tail -1)"
  export KAFKA_BOOTSTRAP
fi
if [[ -z "${HUB_DATABASE_URL:-}" ]]; then
  if ! bash infra/postgres/pg.sh status >/dev/null 2>&1; then started_pg=1; fi
  bash infra/postgres/pg.sh start
  HUB_DATABASE_URL="$(bash infra/postgres/pg.sh url | tail -1)"
  export HUB_DATABASE_URL
fi
echo "test: Kafka at $KAFKA_BOOTSTRAP, PostgreSQL at ${HUB_DATABASE_URL%%@*}@…"

echo "test: static checks (import layers, ruff, mypy)"
.venv/bin/lint-imports
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

echo "test: pytest"
.venv/bin/pytest -q -p no:cacheprovider "$@"
echo "test: finished in $(( $(date +%s) - t0 ))s"
