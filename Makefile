# `make run` and `make test` do all set-up on a fresh machine: they create .venv if missing
# and install Modelport with every runtime and the dev tools.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install system run test lint unit integration bench clean

# llama.cpp is compiled on install. The build is portable (AVX2) rather than native: some
# virtual machines advertise CPU features (AMX, AVX-512 FP16) that a process may not use, and
# a native build then dies with "Illegal instruction". No wheel cache, so a native build made
# elsewhere is never reused.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PY) -m pip install --quiet --no-cache-dir 'llama-cpp-python==0.3.36' || \
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PY) -m pip install --no-cache-dir 'llama-cpp-python==0.3.36'  # once more, loudly
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

# The tests start their own throwaway PostgreSQL server (Debian's binaries) and make their
# test speech with espeak-ng; promtool (Debian package prometheus) checks the /metrics output;
# redis-server holds limits and budgets shared by several gateways in their tests.
SYSTEM_PACKAGES := postgresql espeak-ng prometheus redis-server
system:
	@{ ls /usr/lib/postgresql/*/bin/initdb && command -v espeak-ng && command -v promtool && command -v redis-server; } >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); }

run: install
	$(VENV)/bin/modelport serve --demo

lint: install
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports

unit: install system
	$(VENV)/bin/pytest tests/unit

integration: install system
	$(VENV)/bin/pytest tests/integration

test: lint system
	$(VENV)/bin/pytest

bench: install
	$(PY) bench/gateway_overhead.py

clean:
	rm -rf $(VENV) .modelport .pytest_cache .mypy_cache .ruff_cache .hypothesis
