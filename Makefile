# EdgeKeep: `make demo` runs the whole path locally, `make test` runs every test.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMPS  := .stamps

.PHONY: setup setup-test demo test bench clean system

setup: $(STAMPS)/venv $(STAMPS)/npm system

# Tests also drive a real browser.
setup-test: setup
	@$(PY) tools/ensure_system.py --browser

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

test: setup-test
	$(VPY) -m pytest -q

bench: setup
	for b in bench/*.py; do case $$b in */common.py) ;; *) $(VPY) $$b ;; esac; done

clean:
	rm -rf $(STAMPS) $(VENV) node_modules demo-data test-artifacts
