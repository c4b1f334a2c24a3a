#!/usr/bin/env bash
# The README's run command: installs what is missing, then starts broker, topics, worker, API and
# loads the demo data on embedded defaults (SQLite, local broker on 127.0.0.1:9092). Ctrl-C stops all.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
bash infra/kafka/kafka.sh fetch
exec .venv/bin/hub up "$@"
