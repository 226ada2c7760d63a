# Two entry points for a fresh machine: `make demo` and `make test`. Each builds .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LOCK := requirements/dev.txt

.PHONY: demo test lint typecheck unit install lock clean image bench

# The locked, hash-checked set first (pip refuses anything unpinned or with another hash), then
# the exporter and the simulator from the tree without resolving again; pip check proves the
# result consistent. After changing a dependency range: make lock.
$(STAMP): pyproject.toml simulator/pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e . -e ./simulator
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

## lock: rewrite requirements/*.txt from the ranges in pyproject.toml (UPGRADE=1: newest allowed)
lock:
	bash scripts/lock.sh $(if $(UPGRADE),--upgrade)

## demo: start the Sysdig simulator and a local broker, export a few periods, show them
demo: $(STAMP)
	$(BIN)/chargeback-exporter demo

## test: lint, type-check and the whole test suite against real brokers and a real Prometheus
test: $(STAMP)
	bash scripts/test-infra.sh
	$(BIN)/pip check
	$(BIN)/ruff check .
	$(BIN)/mypy --strict exporter simulator/chargeback_simulator
	$(BIN)/python -m pytest -q
	@# CI also builds the container image and runs it (about 2 minutes on a fresh machine).
	@if [ "$${CI:-}" = "true" ]; then bash scripts/build-image.sh; fi

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict exporter simulator/chargeback_simulator

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not integration'

bench: $(STAMP)
	$(BIN)/python -m bench

image:
	bash scripts/build-image.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .tools
