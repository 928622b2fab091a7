# Two commands from a fresh clone: `make demo` and `make test`.
# torch is installed first and on its own, so pip never resolves an unpinned (CUDA) torch.
# Keep your own torch with `make test TORCH_SPEC=` (empty: skip that step).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --progress-bar off

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	@if [ -n "$(TORCH_SPEC)" ]; then $(PIP) "$(TORCH_SPEC)"; fi

$(VENV)/.installed-demo: $(BIN)/python pyproject.toml
	$(PIP) -e ".[model,plot]"
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(PIP) -e ".[dev,docs]"
	@touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/embetter demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
