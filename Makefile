# The two commands of the README: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps serve test test-fast lint typecheck clean

setup: system-deps $(STAMP)

# bubblewrap sandboxes user models (docs/operations.md, Sandbox); chromium runs the web page's browser
# tests (docs/web.md), so only bubblewrap is required to serve. Debian/Ubuntu packages.
system-deps:
	@missing=""; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq $$missing; \
	elif ! command -v bwrap >/dev/null; then \
	  echo "fpf needs bubblewrap (bwrap) to sandbox models: sudo apt-get install bubblewrap" >&2; exit 1; \
	elif [ -n "$$missing" ]; then \
	  echo "warning: the web page's browser tests need chromium: sudo apt-get install chromium" >&2; \
	fi

# torch is pinned and installed first so nothing pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml client/pyproject.toml client/build_stubs.py client/fpf_client/proto/fpf/v1/fixedpoints.proto
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ./client -e '.[worker,onnx,tf,dev]'
	$(BIN)/python -m pip install --quiet --no-deps onnx2torch==1.5.15
	touch $@

# Prints the web page's address (Web:) once the gateway answers.
serve: setup
	$(BIN)/fpf-server up

# Whole test files go to parallel workers (--dist loadfile keeps each file's order and module fixtures):
# most of the suite's time is spent waiting on the services its tests start, so four share two cores.
TEST_WORKERS ?= 4

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# Tests that start no processes: seconds, not minutes; for the edit-test loop.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration and not slow and not subprocess"

# Lint, format and the one-way import contracts (pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# mypy, strict for the client and service.core (pyproject.toml).
typecheck: setup
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var
