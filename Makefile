# Two entry points for a fresh machine: `make demo` and `make test`. Each builds .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit install clean image bench

$(STAMP): pyproject.toml simulator/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ./simulator -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## demo: start the Sysdig simulator and a local broker, export a few periods, show them
demo: $(STAMP)
	$(BIN)/chargeback-exporter demo

## test: lint, type-check and the whole test suite against real brokers and a real Prometheus
test: $(STAMP)
	bash scripts/test-infra.sh
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
