# make run  - set everything up, then start labbot
# make test - set everything up, then lint and run the whole test suite
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
VENV := .venv

.PHONY: setup run test lint bench clean

# Idempotent and quick when nothing changed, so it runs every time.
setup:
	scripts/setup.sh

run: setup
	$(VENV)/bin/labbot run

lint: setup
	$(VENV)/bin/ruff check labbot tests bench
	$(VENV)/bin/ruff format --check labbot tests bench

test: lint
	$(VENV)/bin/pytest

bench: setup
	$(VENV)/bin/python bench/files.py
	$(VENV)/bin/python bench/sandbox.py
	$(VENV)/bin/python bench/engine.py
	$(VENV)/bin/python bench/tokens.py
	$(VENV)/bin/python bench/scaleout.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
