# The two commands of the README:
#   make run    install what is needed, then prepare, train every domain in
#               parallel, merge and print the report on the synthetic corpus
#   make test   install what is needed, then run the tests
#
# Installs are pinned: requirements.lock holds the versions every package of the
# dev install was tested at, and is given to pip as constraints. After a change
# to the dependencies of pyproject.toml, `make lock` rebuilds it in a scratch venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
PIP := pip install -q --disable-pip-version-check
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)

.PHONY: install run test lint lock lock-check clean
install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU wheel lies on disk; a bare `torch` would pull a CUDA build.
	$(BIN)/$(PIP) -c $(LOCK) torch==2.13.0
	$(BIN)/$(PIP) -c $(LOCK) -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/pipeline.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

# CI: pyflakes, import order and lines of at most 140 characters ([tool.ruff] of pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check rerank scripts tests benchmarks hydra_plugins

# requirements.lock from pyproject.toml alone: a fresh venv, torch first, then
# '.[dev]' resolved without constraints, frozen (rerank itself left out).
LOCK_VENV := $(VENV)-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/$(PIP) torch==2.13.0
	$(LOCK_VENV)/bin/$(PIP) -e '.[dev]'
	{ echo "# The versions of 'make install' (torch==2.13.0, then -e '.[dev]'), given to pip as constraints."; \
	  echo "# Made by 'make lock' with $$($(LOCK_VENV)/bin/python --version) on $$(uname -sm); do not edit by hand."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

# CI: the installed venv holds exactly the locked versions (a dependency added to
# pyproject.toml without `make lock` installs unpinned, and fails here).
lock-check: $(STAMP)
	$(BIN)/pip check
	grep -v '^#' $(LOCK) | sort > $(VENV)/.lock-want
	$(BIN)/pip freeze --exclude-editable | sort > $(VENV)/.lock-have
	diff $(VENV)/.lock-want $(VENV)/.lock-have

clean:
	rm -rf $(VENV) $(LOCK_VENV)
