# Two commands set everything up on a fresh Debian machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_IMAGE := lambda-runtime/python:3.11
BASE_IMAGE := lambda-runtime/base:bookworm
PROTO := proto/lambdad/api/v1/functions.proto
PYTEST_ARGS ?=

.PHONY: help venv run test test-tools example-wheels test-fast lint proto man completion config-example docker postgres runtime-image bench clean install uninstall

help:
	@echo "make run            start lambdad in the foreground (state: ~/.local/state/lambdad)"
	@echo "make test           lint, then unit, integration and end-to-end tests"
	@echo "make test-fast      unit tests only (no Docker engine needed; PostgreSQL binaries)"
	@echo "make postgres       install Debian's postgresql binaries for the tests (no server started)"
	@echo "make example-wheels download the example functions' wheels from PyPI (for the tests)"
	@echo "make lint           ruff and mypy"
	@echo "make proto          regenerate the gRPC stubs from proto/"
	@echo "make man            regenerate man/lambdactl.1 and man/lambdad.8 from the parsers"
	@echo "make config-example regenerate packaging/lambdad.toml (every setting, commented out)"
	@echo "make runtime-image  build $(RUNTIME_IMAGE) from Debian packages (about a minute)"
	@echo "make install        install lambdad, lambdactl, the unit, man pages, completion (PREFIX, DESTDIR)"
	@echo "make uninstall      remove what make install put in place (keeps /etc/lambdad and state)"
	@echo "make bench          benchmarks: deploy, invoke, warm load, cold start, peer, wrk, async (docs/performance.md)"

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "installing python3-venv..."; \
		apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

docker:
	@bash packaging/ensure-docker.sh

# The store's tests run on SQLite and on a private PostgreSQL server each session starts
# on a Unix socket (tests/support/postgres.py); this only installs the binaries.
postgres:
	@bash packaging/ensure-postgres.sh

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

test-fast: $(BIN)/.installed postgres
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# systemd-analyze checks the unit in tests/integration/test_install.py.
test-tools:
	@command -v systemd-analyze >/dev/null || { echo "installing systemd (for systemd-analyze)..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; }

# The wheels of functions/*/requirements.txt, from PyPI, for tests/e2e/test_adapters.py:
# tests talk to loopback only, so this set-up step downloads them (quick once present).
# Without PyPI the other tests still run; test_adapters then fails saying what is missing.
example-wheels: $(BIN)/.installed
	@$(BIN)/python -m tests.support.fetch_wheels \
		|| echo "warning: no example wheels; tests/e2e/test_adapters.py will fail" >&2

test: $(BIN)/.installed runtime-image postgres test-tools example-wheels lint
	$(BIN)/pytest $(PYTEST_ARGS)

proto: $(BIN)/.installed
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. \
		--grpc_python_out=. $(PROTO)

# Man pages from the real parsers (argparse-manpage); a test fails when they are stale.
man: $(BIN)/.installed
	bash packaging/build-man.sh man

# packaging/lambdad.toml: every setting at its default, from lambdad's settings table.
config-example: $(BIN)/.installed
	$(BIN)/python -c 'import sys, lambdad.config.render as c; sys.stdout.write(c.example_toml())' \
		> packaging/lambdad.toml

# Static bash and zsh completion from the same parser; a test fails when it is stale.
completion: $(BIN)/.installed
	$(BIN)/python packaging/completion.py completion

# The outside group loads the gateway with wrk (Debian's package); without it, it falls back
# to bench/loadgen.py in its own process and says so.
bench: $(BIN)/.installed runtime-image example-wheels
	@command -v wrk >/dev/null || { echo "installing wrk..."; \
		{ apt-get update -qq && apt-get install -y -qq wrk; } >/dev/null 2>&1 || \
		echo "could not install wrk: the outside group uses bench/loadgen.py"; }
	$(BIN)/python bench/run.py

# Installation: the package in its own virtual environment under $(PREFIX)/lib/lambda,
# commands linked into $(PREFIX)/bin, and the unit, sysusers entry, man pages,
# completion, docs and an example config. DESTDIR stages everything for packaging;
# scripts are rewritten to point at the final paths. docs/operations.md walks through it.
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
LIBDIR := $(PREFIX)/lib/lambda
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
MANDIR := $(PREFIX)/share/man
DOCDIR := $(PREFIX)/share/doc/lambda
BASHCOMPDIR := $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR := $(PREFIX)/share/zsh/site-functions
DEST := $(DESTDIR)
# The service runs as its own user, so its interpreter must not live in someone's home
# (pyenv, conda): the system Python when there is one.
INSTALL_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v $(PYTHON))

install: $(BIN)/.installed
	rm -rf build/wheel && $(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w build/wheel .
	rm -rf $(DEST)$(LIBDIR)
	@$(INSTALL_PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "installing python3-venv..."; \
		apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
	$(INSTALL_PYTHON) -m venv $(DEST)$(LIBDIR)
	$(DEST)$(LIBDIR)/bin/pip install --quiet --disable-pip-version-check build/wheel/*.whl
	@if [ -n "$(DESTDIR)" ]; then \
		grep -rlI --null "$(DEST)$(LIBDIR)" $(DEST)$(LIBDIR)/bin $(DEST)$(LIBDIR)/pyvenv.cfg \
			| xargs -0 -r sed -i "s|$(DEST)$(LIBDIR)|$(LIBDIR)|g"; fi
	install -d $(DEST)$(PREFIX)/bin
	ln -sfn ../lib/lambda/bin/lambdad $(DEST)$(PREFIX)/bin/lambdad
	ln -sfn ../lib/lambda/bin/lambdactl $(DEST)$(PREFIX)/bin/lambdactl
	install -D -m 0644 man/lambdactl.1 $(DEST)$(MANDIR)/man1/lambdactl.1
	install -D -m 0644 man/lambdad.8 $(DEST)$(MANDIR)/man8/lambdad.8
	install -D -m 0644 completion/lambdactl.bash $(DEST)$(BASHCOMPDIR)/lambdactl
	install -D -m 0644 completion/_lambdactl $(DEST)$(ZSHCOMPDIR)/_lambdactl
	install -d $(DEST)$(DOCDIR)
	install -m 0644 README.md docs/*.md $(DEST)$(DOCDIR)/
	install -m 0644 packaging/lambdad.toml $(DEST)$(DOCDIR)/lambdad.toml.example
	install -D -m 0644 packaging/sysusers.d/lambdad.conf $(DEST)$(SYSUSERSDIR)/lambdad.conf
	install -d $(DEST)$(UNITDIR)
	sed -e "s|/usr/local/bin/lambdad|$(PREFIX)/bin/lambdad|" \
		-e "s|/usr/local/share/doc/lambda|$(DOCDIR)|" \
		-e "s|/etc/lambdad/|$(SYSCONFDIR)/lambdad/|g" \
		systemd/lambdad.service > $(DEST)$(UNITDIR)/lambdad.service
	chmod 0644 $(DEST)$(UNITDIR)/lambdad.service
	install -d -m 0755 $(DEST)$(SYSCONFDIR)/lambdad
	@test -e $(DEST)$(SYSCONFDIR)/lambdad/lambdad.toml \
		|| install -m 0644 packaging/lambdad.toml $(DEST)$(SYSCONFDIR)/lambdad/lambdad.toml
	@# The bootstrap admin key the unit passes as a credential; only on a live install.
	@if [ -z "$(DESTDIR)" ] && [ ! -e $(SYSCONFDIR)/lambdad/api-key ]; then \
		(umask 077; $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))' \
			> $(SYSCONFDIR)/lambdad/api-key); \
		echo "wrote a bootstrap admin key to $(SYSCONFDIR)/lambdad/api-key (mode 0600)"; fi
	@echo "installed lambda under $(DEST)$(PREFIX); next: systemd-sysusers," \
		"make runtime-image, systemctl daemon-reload && systemctl enable --now lambdad"

uninstall:
	rm -rf $(DEST)$(LIBDIR) $(DEST)$(DOCDIR)
	rm -f $(DEST)$(PREFIX)/bin/lambdad $(DEST)$(PREFIX)/bin/lambdactl \
		$(DEST)$(MANDIR)/man1/lambdactl.1 $(DEST)$(MANDIR)/man8/lambdad.8 \
		$(DEST)$(BASHCOMPDIR)/lambdactl $(DEST)$(ZSHCOMPDIR)/_lambdactl \
		$(DEST)$(SYSUSERSDIR)/lambdad.conf $(DEST)$(UNITDIR)/lambdad.service
	@echo "kept $(SYSCONFDIR)/lambdad (config, bootstrap key) and /var/lib/lambdad (state);" \
		"remove them by hand to purge"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
