# EdgeKeep: `make demo` runs the whole path locally, `make test` runs every test,
# `make test-unit` the fast pure ones, `make lint` ruff and mypy.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMPS  := .stamps

.PHONY: setup setup-test demo test test-unit lint bench clean system fuzz

setup: $(STAMPS)/venv $(STAMPS)/npm system

# Tests also drive a real browser, and start a real PostgreSQL (the store's second backend).
setup-test: setup
	@$(PY) tools/ensure_system.py --browser --postgresql

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	@touch $@

$(STAMPS)/npm: package.json package-lock.json
	@mkdir -p $(STAMPS)
	npm ci --no-audit --no-fund
	@touch $@

system:
	@$(PY) tools/ensure_system.py

demo: setup
	$(VPY) -m gateway demo --trackers 3 --data-dir demo-data

# Two test processes (pytest-xdist), each test file whole in one of them (its module fixtures
# made once): most tests wait on brokers, chains and subprocesses, so two share two cores.
# The 15 slowest tests are listed at the end, to keep the suite's time in view.
TEST_JOBS ?= 2

test: setup-test
	$(VPY) -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=15

# Pure tests (pytest -m unit): no broker, chain, node, browser or subprocess; the venv is
# all they need (a unit module's cases on PostgreSQL are integration: they start a server).
test-unit: $(STAMPS)/venv
	$(VPY) -m pytest -q -m "unit and not integration"

# ruff and mypy come with the venv's test extra; configured in pyproject.toml.
lint: $(STAMPS)/venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Atheris fuzz targets (fuzz/targets.py), FUZZ_SECONDS (default 60) each; prints exec counts.
fuzz: $(STAMPS)/venv
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} $(VPY) -m fuzz.run

bench: setup
	for b in bench/*.py; do case $$b in */common.py) ;; *) $(VPY) $$b ;; esac; done

clean:
	rm -rf $(STAMPS) $(VENV) node_modules demo-data test-artifacts
