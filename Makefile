# make run   - set everything up, then start labbot
# make test  - set everything up, then lint and run the whole test suite (CI), and the container
#              test when a Docker engine answers
# make test-container - build the image and prove the sandbox works inside it
# make check - lint, types, layering and the fast tier (no sandbox, NATS, S3), in under 2 min
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
VENV := .venv

.PHONY: setup run test test-container check lint bench clean
FAST := not sandbox and not nats and not s3 and not multihost and not mongo

# Idempotent and quick when nothing changed, so it runs every time.
setup:
	scripts/setup.sh

# After labbot stops (or fails to start), say how to reach the command for the README's examples.
run: setup
	@$(VENV)/bin/labbot run; status=$$?; \
	if [ "$$(command -v labbot)" ]; then cmd=labbot; else cmd="$(CURDIR)/$(VENV)/bin/labbot"; fi; \
	echo "make run: labbot stopped (exit $$status). Its command: \`$$cmd --help\`, \`$$cmd doctor\`."; \
	exit $$status

lint: setup
	$(VENV)/bin/ruff check labbot tests bench
	$(VENV)/bin/ruff format --check labbot tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Two tests at a time, then the few that must run alone (marked `alone` in tests/conftest.py:
# the multi-host scaling test, the unprivileged rerun whose fork bomb no cgroup bounds).
test: lint
	$(VENV)/bin/pytest -n 2 --durations=15 -m "not alone"
	$(VENV)/bin/pytest -m alone
	@if docker info >/dev/null 2>&1; then scripts/test-container.sh; \
	else echo "make test: skipped scripts/test-container.sh (no Docker engine: docker info fails)"; fi

test-container:
	scripts/test-container.sh

check: lint
	$(VENV)/bin/pytest -m "$(FAST)"

bench: setup
	$(VENV)/bin/python bench/files.py
	$(VENV)/bin/python bench/sandbox.py
	$(VENV)/bin/python bench/engine.py
	$(VENV)/bin/python bench/tokens.py
	$(VENV)/bin/python bench/scaleout.py
	$(VENV)/bin/python bench/hostile.py
	$(VENV)/bin/python bench/neighbours.py
	$(VENV)/bin/python bench/store_stress.py
	$(VENV)/bin/python bench/messy.py
	$(VENV)/bin/python bench/checkpoint.py
	$(VENV)/bin/python bench/budgets.py
	$(VENV)/bin/python bench/downloads.py
	$(VENV)/bin/python bench/cli.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
