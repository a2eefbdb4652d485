# pytorch-cuda: every target is a thin call into the project's Python CLIs (python -m images, verify).
# `make` or `make help` lists them. Variables: TAG, FLAVOR, PLATFORM, BASE_IMAGE, REGISTRY, CA_BUNDLE, VENV, PYTHON.
#
# The CLIs run in the project's venv (VENV, default .venv). A target that needs it sets it up when it is
# missing or unfinished (scripts/setup_venv.sh: the project + its [build] extra, no torch; the stamp file
# VENV/.pytorch-cuda-tools is written last). PYTHON=python (CI's workflows) uses that Python as it is, for
# everything. The tests run in VENV's Python when it exists (make dev), else python3 (a GPU host without one).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
TOOLS_STAMP := $(VENV)/.pytorch-cuda-tools
ifeq ($(origin PYTHON),undefined)
PYTHON   = $(shell test -x $(VENV)/bin/python && echo $(VENV)/bin/python || echo python3)
TOOLS_PY := $(VENV)/bin/python
TOOLS   := $(TOOLS_STAMP)
else
TOOLS_PY := $(PYTHON)
TOOLS   :=
endif
TAG     ?= v2.8
FLAVOR  ?= runtime
PLATFORM ?=
BASE_IMAGE ?=
REGISTRY ?=
CA_BUNDLE ?=
BUILD_ARGS ?=
VERIFY_ARGS ?=
PYTEST_ARGS ?=
IMAGES  := $(TOOLS_PY) -m images
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || (command -v docker-compose >/dev/null 2>&1 && echo docker-compose))

ca_flag = $(if $(CA_BUNDLE),--extra-ca-cert $(CA_BUNDLE),)
platform_flags = $(if $(PLATFORM),--platform $(PLATFORM)) $(if $(BASE_IMAGE),--base-image $(BASE_IMAGE))

.PHONY: help
help: ## list the targets
	@echo "pytorch-cuda: build, run and verify GPU deep-learning images"
	@echo
	@echo "usage: make TARGET [TAG=v2.8] [FLAVOR=runtime|devel] [REGISTRY=ghcr.io/you] [CA_BUNDLE=file.pem] [VERIFY_ARGS=--quick]"
	@echo "       make build TAG=v2.15 PLATFORM=linux/arm64 [BASE_IMAGE=an arm64 base]: arm64 under QEMU, tagged v2.15-arm64"
	@echo "       the first target that needs it sets up $(VENV) (the build tools, no torch); make dev adds torch"
	@echo "       make test|test-unit|test-network|test-engine|test-gpu [PYTEST_ARGS='-q -k name']"
	@echo "tests: a plain pytest and test-unit leave out the tests marked network (PyPI) and gpu; test (CI) runs network"
	@echo
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: tools
tools: $(TOOLS_STAMP) ## set up .venv (VENV) with the build tools (the project + [build] extra, no torch) if missing

$(TOOLS_STAMP): pyproject.toml scripts/setup_venv.sh
	@scripts/setup_venv.sh $(VENV)

.PHONY: dev
dev: $(TOOLS_STAMP) ## add a CPU torch, the test tools and the examples' packages to .venv (VENV), for make test
	@echo "make: adding torch 2.13.0 and the [dev,harness,examples] extras to $(VENV)"
	$(VENV)/bin/python -m pip install -q 'torch==2.13.0'
	$(VENV)/bin/python -m pip install -q -e '.[dev,harness,examples]'

# Targets that run the tests or linters need make dev's tools; say so in one line instead of a traceback.
.PHONY: need-dev
need-dev:
	@$(PYTHON) -c 'import pytest' 2>/dev/null || { echo "error: $(PYTHON) has no pytest; fix: make dev (the test tools and a CPU torch in $(VENV))"; exit 2; }

.PHONY: pins
pins: $(TOOLS) ## read CUDA/cuDNN/NCCL pins from each line's torch wheel into images/pins.toml
	$(IMAGES) pins

.PHONY: pins-check
pins-check: $(TOOLS) ## fail when images/pins.toml and the torch wheels disagree
	$(IMAGES) pins-check

.PHONY: dockerfiles
dockerfiles: $(TOOLS) ## render images/<tag>/Dockerfile(s) and the README matrix table from the matrix
	$(IMAGES) dockerfiles
	$(IMAGES) readme

.PHONY: lock
lock: $(TOOLS) ## pin every image's packages to their wheels' sha256 in images/<tag>/requirements.lock (keeps unchanged pins; UPGRADE=1 re-resolves all)
	$(IMAGES) lock $(if $(UPGRADE),--upgrade)

.PHONY: lock-check
lock-check: $(TOOLS) ## fail when a requirements.lock is stale (offline)
	$(IMAGES) lock --check

.PHONY: build
build: $(TOOLS) ## build pytorch-cuda:TAG (FLAVOR) with the Docker Engine API
	$(strip $(IMAGES) build --tag $(TAG) --flavor $(FLAVOR) $(ca_flag) $(platform_flags) $(BUILD_ARGS))

.PHONY: verify
verify: $(TOOLS) ## run `verify run` inside pytorch-cuda:TAG on the host's GPUs (GPUS=auto|all|none); report in reports/TAG/
	$(IMAGES) verify --tag $(TAG) --flavor $(FLAVOR) $(if $(GPUS),--gpus $(GPUS),) $(if $(VERIFY_ARGS),-- $(VERIFY_ARGS),)

.PHONY: push
push: $(TOOLS) ## push the short and full tags of TAG to REGISTRY (MULTI_PLATFORM=1: every platform, one index)
	@test -n "$(REGISTRY)" || { echo "error: REGISTRY is empty; fix: make push TAG=$(TAG) REGISTRY=ghcr.io/you"; exit 2; }
	$(strip $(IMAGES) push --tag $(TAG) --flavor $(FLAVOR) --registry $(REGISTRY) $(if $(MULTI_PLATFORM),--multi-platform))

# CPU=1: hosts without the NVIDIA Container Toolkit (naming the files leaves out compose.override.yaml's GPUs).
compose_files = $(if $(filter 1 yes true,$(CPU)),-f compose.yaml -f compose.cpu.yaml,)

.PHONY: up
up: ## docker compose up -d (jupyter + ssh) as your UID/GID; CPU=1 without GPUs
	@test -n "$(COMPOSE)" || { echo "error: neither 'docker compose' nor 'docker-compose' found; fix: install Docker Compose v2"; exit 2; }
	mkdir -p "$${WORKSPACE_DIR:-workspace}"
	HOST_UID=$$(id -u) HOST_GID=$$(id -g) $(COMPOSE) $(compose_files) up -d

.PHONY: down
down: ## docker compose down (named volumes are kept)
	@test -n "$(COMPOSE)" || { echo "error: neither 'docker compose' nor 'docker-compose' found; fix: install Docker Compose v2"; exit 2; }
	$(COMPOSE) $(compose_files) down

# Markers (pyproject.toml): a plain pytest deselects `gpu` and `network`; `make test` asks for network too.
.PHONY: test
test: need-dev ## the whole suite but GPU tests, network (PyPI) tests included: what CI runs (needs dockerd: see .ci/run)
	$(PYTHON) -m pytest -m 'not gpu' $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: need-dev ## fast tests only, offline: unit, CPU integration and the examples; no engine, no image builds, no PyPI
	$(PYTHON) -m pytest tests/unit tests/integration tests/examples $(PYTEST_ARGS)

.PHONY: test-network
test-network: need-dev ## only the tests that read PyPI (marker network)
	$(PYTHON) -m pytest -m network $(PYTEST_ARGS)

.PHONY: test-engine
test-engine: need-dev ## engine tests only (real dockerd, builds the v2.8 image once)
	$(PYTHON) -m pytest tests/engine $(PYTEST_ARGS)

.PHONY: test-gpu
test-gpu: need-dev ## GPU tests on a GPU host; they FAIL when no GPU is seen (VERIFY_EXPECT_GPU=1; =0 lets them skip)
	VERIFY_EXPECT_GPU=$${VERIFY_EXPECT_GPU:-1} $(PYTHON) -m pytest -m gpu tests/gpu $(PYTEST_ARGS)

.PHONY: lint
lint: ## ruff check + format check, hadolint on every Dockerfile, actionlint on workflows
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m images lint
