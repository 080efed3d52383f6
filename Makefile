# Two commands set everything up on a fresh Debian machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_IMAGE := lambda-runtime/python:3.11
BASE_IMAGE := lambda-runtime/base:bookworm
PROTO := proto/lambdad/api/v1/functions.proto
PYTEST_ARGS ?=

.PHONY: help venv run test test-fast lint proto man completion config-example docker runtime-image bench clean

help:
	@echo "make run            start lambdad in the foreground (state: ~/.local/state/lambdad)"
	@echo "make test           lint, then unit, integration and end-to-end tests"
	@echo "make test-fast      unit tests only (no Docker engine needed)"
	@echo "make lint           ruff and mypy"
	@echo "make proto          regenerate the gRPC stubs from proto/"
	@echo "make man            regenerate man/lambdactl.1 and man/lambdad.8 from the parsers"
	@echo "make config-example regenerate packaging/lambdad.toml (every setting, commented out)"
	@echo "make runtime-image  build $(RUNTIME_IMAGE) from Debian packages (about a minute)"
	@echo "make bench          benchmarks: deploy, invoke, warm load, cold start, peer, async (docs/performance.md)"

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "installing python3-venv..."; \
		apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

docker:
	@bash packaging/ensure-docker.sh

runtime-image: docker
	@bash packaging/runtime/python/build-base.sh $(BASE_IMAGE)
	@docker build --quiet -t $(RUNTIME_IMAGE) packaging/runtime/python >/dev/null
	@echo "runtime image $(RUNTIME_IMAGE) ready"

run: $(BIN)/.installed runtime-image
	@echo "lambdactl is at $(BIN)/lambdactl (or: source $(BIN)/activate)"
	exec $(BIN)/lambdad $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check lambdad lambdactl tests bench packaging/runtime/python
	$(BIN)/mypy

test-fast: $(BIN)/.installed
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test: $(BIN)/.installed runtime-image lint
	$(BIN)/pytest $(PYTEST_ARGS)

proto: $(BIN)/.installed
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. \
		--grpc_python_out=. $(PROTO)

# Man pages from the real parsers (argparse-manpage); a test fails when they are stale.
man: $(BIN)/.installed
	bash packaging/build-man.sh man

# packaging/lambdad.toml: every setting at its default, from lambdad's settings table.
config-example: $(BIN)/.installed
	$(BIN)/python -c 'import sys, lambdad.config as c; sys.stdout.write(c.example_toml())' \
		> packaging/lambdad.toml

# Static bash and zsh completion from the same parser; a test fails when it is stale.
completion: $(BIN)/.installed
	$(BIN)/python packaging/completion.py completion

bench: $(BIN)/.installed runtime-image
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
