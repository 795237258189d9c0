# make run  - set everything up, then start labbot
# make test - set everything up, then lint and run the whole test suite
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
VENV := .venv

.PHONY: setup run test lint bench clean

setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml uv.lock scripts/setup.sh labbot/sandbox/runtime/requirements.txt labbot/sandbox/runtime/matplotlibrc
	scripts/setup.sh
	touch $@

run: setup
	$(VENV)/bin/labbot doctor
	$(VENV)/bin/labbot --help

lint: setup
	$(VENV)/bin/ruff check labbot tests bench
	$(VENV)/bin/ruff format --check labbot tests bench

test: lint
	$(VENV)/bin/pytest

bench: setup
	$(VENV)/bin/python bench/files.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
