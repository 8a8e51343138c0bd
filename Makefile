# EdgeKeep: `make demo` runs the whole path locally, `make test` runs every test.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMPS  := .stamps

.PHONY: setup demo test bench clean mosquitto

setup: $(STAMPS)/venv $(STAMPS)/npm mosquitto

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

mosquitto:
	@$(PY) tools/ensure_mosquitto.py

demo: setup
	$(VPY) -m gateway demo --trackers 3 --data-dir demo-data

test: setup
	$(VPY) -m pytest -q

bench: setup
	$(VPY) bench/ingest.py

clean:
	rm -rf $(STAMPS) $(VENV) node_modules demo-data test-artifacts
