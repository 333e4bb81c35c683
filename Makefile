# Turnstile. `make demo` and `make test` work on a fresh Debian machine (they install what is missing).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all deps venv system-deps kube demo test test-unit test-redis test-k8s lint bench e2e clean

all: test

# --- what a fresh machine lacks -------------------------------------------------------------
system-deps:
	@bash hack/install-system-deps.sh

$(VENV)/.installed: pyproject.toml requirements/ci.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/ci.txt -e '.[operator,dev]'
	@touch $@

venv: $(VENV)/.installed

kube:
	@bash hack/build-kube.sh

deps: system-deps venv kube

# --- the README's two commands -------------------------------------------------------------
demo: deps
	$(PY) -m examples.demo

test: deps lint
	$(PY) -m pytest -m "unit or redis or k8s" tests

test-unit: venv
	$(PY) -m pytest -m unit tests

test-redis: venv
	$(PY) -m pytest -m redis tests

test-k8s: venv kube
	$(PY) -m pytest -m k8s tests

lint: venv
	$(VENV)/bin/ruff check turnstile tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	@if [ -f Dockerfile ]; then $(VENV)/bin/hadolint Dockerfile; fi

bench: deps
	$(PY) -m bench.locks
	$(PY) -m bench.timers
	$(PY) -m bench.operator

e2e: venv
	$(PY) -m pytest -m e2e tests/e2e

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
