# Turnstile. `make demo` and `make test` work on a fresh Debian machine (they install what is missing).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all deps venv system-deps kube demo test test-unit test-redis test-k8s lint lint-chart bench e2e clean

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

test: deps lint lint-chart
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
	$(VENV)/bin/hadolint Dockerfile
	bash hack/sync-chart-crds.sh --check

lint-chart: kube
	@helm="$$(bash hack/build-kube.sh --print-dir)/helm"; \
	for values in "" charts/turnstile-operator/ci/*-values.yaml; do \
	  echo "helm lint --strict $${values:-(defaults)}"; \
	  "$$helm" lint --strict --quiet charts/turnstile-operator $${values:+-f "$$values"} || exit 1; \
	done

bench: deps
	$(PY) -m bench.locks
	$(PY) -m bench.timers
	$(PY) -m bench.operator

e2e: venv kube
	bash hack/e2e-kind.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
