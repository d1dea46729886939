# The commands the README names. `make demo` and `make test` work on a fresh clone:
# they set up everything they need, caching the slow parts outside the clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
CACHE_ROOT ?= $(HOME)/.cache/driftwarden
export UV_CACHE_DIR ?= $(HOME)/.cache/uv
UV_HOME := $(CACHE_ROOT)/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help tools venv devcluster-bin lint test test-unit test-job test-e2e demo demo-down clean

help:
	@echo "make demo   - run the whole loop on the embedded devcluster"
	@echo "make test   - set everything up and run lint + the whole test suite"

$(UV):
	python3 -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The venv is re-synced when the lock changes; wheels come from the uv cache
# (hard links), so a fresh clone on a warm machine syncs in seconds. ONNX Runtime is the CPU
# wheel (extra ort-cpu): ort-cuda (onnxruntime-gpu) installs the same module, so it is left out.
$(VENV)/.synced: uv.lock pyproject.toml devcluster/pyproject.toml | $(UV)
	$(UV) sync --all-extras --no-extra ort-cuda --frozen
	touch $@

venv: $(VENV)/.synced

# promtool (alert rule tests) and prometheus (the e2e scrape test) come from Debian.
tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package (promtool, prometheus)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

devcluster-bin: venv
	$(VENV)/bin/devcluster build
	$(VENV)/bin/devcluster chromium

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: venv tools devcluster-bin lint
	bash .ci/pytest-nonempty $(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv tools devcluster-bin
	bash .ci/pytest-nonempty $(PY) -m pytest -m unit $(PYTEST_ARGS)

test-job: venv
	bash .ci/pytest-nonempty $(PY) -m pytest -m job $(PYTEST_ARGS)

test-e2e: venv devcluster-bin
	bash .ci/pytest-nonempty $(PY) -m pytest -m e2e $(PYTEST_ARGS)

demo: venv devcluster-bin
	$(PY) -m devcluster.demo

demo-down: venv
	$(VENV)/bin/devcluster down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
