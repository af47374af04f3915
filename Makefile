# Two commands do all the set-up on a fresh machine (Python 3.10+, Node.js 18+ with npx):
#   make demo   the whole promotion flow on the local backend, no Azure needed
#   make test   lint and the test suite (starts Azurite itself)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean check-python screenshot serve

check-python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: $(PYTHON): command not found; run make with PYTHON=python3.11 (or any Python 3.10+ you have)" >&2; exit 2; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null || { \
	  echo "error: $(PYTHON) is not Python 3.10 or newer; run make with PYTHON=python3.11 (or any 3.10+)" >&2; exit 2; }

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml | check-python
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Azurite comes from npm; fetching it once here keeps the download out of the tests' start-up time.
$(VENV)/.azurite: $(VENV)/.installed
	npx --yes azurite@3 --version
	touch $@

demo: $(VENV)/.installed
	$(PY) -m promotion demo
	@echo
	@echo "The approver console: run 'make serve' (or: $(PY) -m promotion serve --as alice@contoso.com --role Promotion.Approver)"
	@echo "and open http://127.0.0.1:7071/api/console"

serve: $(VENV)/.installed
	$(PY) -m promotion serve --as $${AS:-carol@contoso.com} --role Promotion.Approver

# docs/console.png, made in headless Chromium by the same code as the browser tests (tests/browser).
screenshot: $(VENV)/.installed
	$(PY) -m tests.browser.screenshot docs/console.png

test: $(VENV)/.azurite
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .venv-* .promotion .pytest_cache .ruff_cache *.egg-info
