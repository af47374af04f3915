# Two commands do all the set-up on a fresh machine (Python 3.10+, Node.js 18+ with npx):
#   make demo   the whole promotion flow on the local backend, no Azure needed
#   make test   lint and the test suite (starts Azurite itself)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Azurite comes from npm; fetching it once here keeps the download out of the tests' start-up time.
$(VENV)/.azurite: $(VENV)/.installed
	npx --yes azurite@3 --version
	touch $@

demo: $(VENV)/.installed
	$(PY) -m promotion demo

test: $(VENV)/.azurite
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .promotion .pytest_cache .ruff_cache
