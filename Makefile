# One entry point for newcomers and CI: `make demo` and `make test` set everything up first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/ignition-exporter --demo --listen 127.0.0.1:9871

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
