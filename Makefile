# Thin wrappers; see README.md. Needs Python 3.11+ as $(PYTHON).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run web test demo bench bench-match lint install install-test clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "policybot needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# bot/rules/_speedups.c is built in place by the editable install: a change to it rebuilds.
NATIVE := bot/rules/_speedups.c

$(VENV)/.installed: pyproject.toml $(NATIVE) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(NATIVE) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,fast]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install  ## migrate the database, then run the bot on rules/ (Ctrl-C stops it)
	$(BIN)/policybot db upgrade
	$(BIN)/policybot run

web: install  ## migrate, then serve the analysts' web console on http://127.0.0.1:8080
	$(BIN)/policybot db upgrade
	$(BIN)/policybot web

demo: install  ## sample feeds on loopback, one cycle, alerts in the terminal
	$(BIN)/policybot demo

test: install-test  ## the whole suite (PostgreSQL tests need POLICYBOT_TEST_POSTGRES_URL)
	$(BIN)/python -m pytest

lint: install-test
	$(BIN)/ruff check bot tests bench migrations
	$(BIN)/mypy

$(VENV)/.installed-bench: pyproject.toml $(NATIVE) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,fast,bench]'
	@touch $@ $(VENV)/.installed $(VENV)/.installed-test

bench: $(VENV)/.installed-bench bench-match  ## benchmarks; figures go to bench/RESULTS.md
	$(BIN)/python bench/poll.py --peers
	$(BIN)/python bench/poll.py --peers --latency 0.1 --feeds 500
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/fetch.py
	$(BIN)/python bench/parse.py
	$(BIN)/python bench/decompress.py

bench-match: $(VENV)/.installed-bench  ## rule matching: compiled engine vs per-rule re
	$(BIN)/python bench/match.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
