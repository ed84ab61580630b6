# The two commands of the README: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup serve test clean

setup: $(STAMP)

# torch is pinned and installed first so nothing pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ./client -e '.[worker,onnx,tf,dev]'
	$(BIN)/python -m pip install --quiet --no-deps onnx2torch==1.5.15
	touch $@

serve: setup
	$(BIN)/fpf-server up

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) var
