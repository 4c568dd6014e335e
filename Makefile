# The two commands: `make run` serves the dashboards, `make test` runs the whole suite.
# Both create the virtualenv and install what they need on their own.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Four on two cores, measured: six took 4 min 24 s where four took 3 min 53 s.
TEST_WORKERS ?= 4

.PHONY: run test test-services frontend frontend-check stack bench lint format clean

run: $(STAMP) frontend
	$(BIN)/virtuoso serve

test: $(STAMP) test-services frontend frontend-check
	$(BIN)/ruff check app tests dashboards tools bench
	$(BIN)/ruff format --check app tests dashboards tools bench
	$(BIN)/mypy app
	@# TEST_WORKERS workers (pytest-xdist), each test file on one of them (its module fixtures
	@# built once), the longest files first (tests/conftest.py). pytest exits 5 when it
	@# collected no test: a failure here, said plainly. Bytecode is written (even where
	@# PYTHONDONTWRITEBYTECODE is set): else every worker and every server a test starts
	@# compiles the app and rewrites the test modules again (+20 s on a clean clone).
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder || { rc=$$?; [ $$rc -ne 5 ] || echo "make test: no tests were collected" >&2; exit $$rc; }

# Debian packages of the servers and the browser the tests start (installed when missing).
test-services:
	@scripts/ensure-debian-packages.sh memcached:memcached redis-server:redis-server \
		chromium-headless-shell:chromium-headless-shell prometheus:promtool nginx:nginx \
		docker-compose:docker-compose

# The compose topology with local processes: one collector (`virtuoso collect`, metrics
# on :8123), nginx on :8003 in front of two serving replicas, Memcached, Redis and
# Prometheus (:8303). Ctrl-C stops it all. COLLECTORS=2: a standby collector too (:8124).
stack: $(STAMP) test-services frontend
	$(BIN)/python -m tools.local_stack $(if $(COLLECTORS),--collectors $(COLLECTORS))

# The KPI benchmark (about 10 minutes; QUICK=1: about 3): bench/results/<date>/report.md.
# wrk comes from Debian when missing (the load generator falls back to asyncio without).
bench: $(STAMP) test-services frontend
	@scripts/ensure-debian-packages.sh chromium:chromium
	@scripts/ensure-debian-packages.sh wrk:wrk || echo "bench: wrk not installed; using the asyncio load generator"
	$(BIN)/python -m bench.run $(if $(QUICK),--quick)

# The pages' bundles (app/web/static/dist/); node and npm come from Debian
# when missing.
frontend:
	@scripts/ensure-debian-packages.sh nodejs:node npm:npm
	scripts/build-frontend.sh

# ESLint (recommended rules, no-undef) and the TypeScript check (checkJs, JSDoc types)
# of frontend/src; the packages come from the lock, installed by the build.
frontend-check: frontend
	npm --prefix frontend run --silent lint
	npm --prefix frontend run --silent typecheck

lint: $(STAMP) frontend-check
	$(BIN)/ruff check app tests dashboards tools bench

format: $(STAMP)
	$(BIN)/ruff format app tests dashboards tools bench
	$(BIN)/ruff check --fix app tests dashboards tools bench

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
