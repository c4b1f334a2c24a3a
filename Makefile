# Qixin referral hub. `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

.PHONY: help up test setup lint fmt kafka-start kafka-stop pg-start pg-stop bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

up: ## run the hub with demo data (installs what is missing; Ctrl-C stops it)
	bash scripts/up.sh

test: ## run the static checks and the whole test suite against real Kafka and PostgreSQL
	bash scripts/test.sh

setup: ## create .venv with the locked packages
	bash scripts/setup.sh

lint: setup ## import layers, ruff, mypy
	.venv/bin/lint-imports && .venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

fmt: setup ## format and auto-fix
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

lock: ## re-resolve requirements.lock from pyproject.toml
	.venv/bin/uv pip compile -q pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

kafka-start: ## start the local broker (KAFKA_PORT, default 9092)
	bash infra/kafka/kafka.sh start

kafka-stop: ## stop the local broker
	bash infra/kafka/kafka.sh stop

pg-start: ## start a throwaway PostgreSQL (PGPORT, default 55432)
	bash infra/postgres/pg.sh start

pg-stop: ## stop and delete the throwaway PostgreSQL
	bash infra/postgres/pg.sh stop

bench: setup ## run the micro-benchmarks (figures printed and written to bench/results/)
	for b in bench/bench_*.py; do .venv/bin/python $$b || exit 1; done

clean: ## remove caches and runtime state (keeps downloaded jars)
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
