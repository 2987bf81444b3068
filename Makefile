# One-command entry points. `make demo` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv venv-serving demo test lint typecheck models bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# What serving and the demo need: the package and its own dependencies (LiteRT, paho, amqtt, ...).
$(VENV)/.installed-serving: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

# Everything else on top: tests, lint, types (the [dev] extra) and training (TensorFlow, [train]).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,train]'
	touch $(VENV)/.installed-serving $@

venv-serving: $(VENV)/.installed-serving
venv: $(VENV)/.installed

## demo: embedded broker + shipped models + two tenants streaming for ~20 s, then a summary
## (installs the serving dependencies only: no TensorFlow)
demo: venv-serving
	$(PY) -m examples.demo

## test: lint, type check, then the whole pytest suite (needs `mosquitto` installed: see .ci/run)
test: venv lint typecheck
	$(PY) -m pytest

lint: venv
	$(PY) -m ruff check .

typecheck: venv
	$(PY) -m mypy

## models: regenerate the shipped sample data and model versions from scratch
models: venv
	bash scripts/make_models.sh

## bench: the full benchmark against a real Mosquitto; writes benchmarks/results/
bench: venv
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
