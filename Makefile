# One entry point for newcomers and CI: `make demo` and `make test` set everything up first.
# `make demo` installs only what the exporter needs; the test tools come with `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean

# The exporter and its dependencies, editable: enough to run it.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e .
	touch $@

# Everything for development: the test extra (pytest, ruff, hypothesis, ...) on top.
$(VENV)/.installed: $(VENV)/.runtime
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.runtime
	$(VENV)/bin/ignition-exporter --demo --listen 127.0.0.1:9871

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
