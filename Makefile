# `make run` and `make test` do all set-up on a fresh machine: they create .venv if missing
# and install Modelport with every runtime and the dev tools.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install postgres run test lint unit integration bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

# The tests start their own throwaway PostgreSQL server; they need its binaries (Debian's).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

run: install
	$(VENV)/bin/modelport serve --demo

lint: install
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports

unit: install postgres
	$(VENV)/bin/pytest tests/unit

integration: install postgres
	$(VENV)/bin/pytest tests/integration

test: lint postgres
	$(VENV)/bin/pytest

bench: install
	$(PY) bench/gateway_overhead.py

clean:
	rm -rf $(VENV) .modelport .pytest_cache .mypy_cache .ruff_cache
