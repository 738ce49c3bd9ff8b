# `make run` and `make test` do all set-up on a fresh machine: they create .venv if missing
# and install Modelport with every runtime and the dev tools.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint unit integration bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/modelport serve --demo

lint: install
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports

unit: install
	$(VENV)/bin/pytest tests/unit

integration: install
	$(VENV)/bin/pytest tests/integration

test: lint
	$(VENV)/bin/pytest

bench: install
	$(PY) bench/gateway_overhead.py

clean:
	rm -rf $(VENV) .modelport .pytest_cache .mypy_cache .ruff_cache
