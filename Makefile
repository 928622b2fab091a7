# Two commands from a fresh clone: `make demo` and `make test`.
# torch is installed first and on its own, so pip never resolves an unpinned (CUDA) torch.
# Keep your own torch with `make test TORCH_SPEC=` (empty: skip that step).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --progress-bar off

.PHONY: demo test test-floors lint bench clean

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

# every extra is installed here, so a test may not skip for lack of one (tests/conftest.py)
test: $(VENV)/.installed-dev
	EMBETTER_EXTRAS=required $(BIN)/python -m pytest

# The fast subset against the lowest versions pyproject.toml allows (.ci/floors.txt), in a venv
# of its own so the main one keeps the newest releases.
FLOOR_VENV ?= .venv-floors
FLOOR_TESTS ?= tests/test_floors.py tests/test_boundary.py tests/test_text.py tests/test_sbert.py \
	tests/test_sbert_batches.py tests/test_sbert_tuner.py tests/test_sbert_stream.py \
	tests/test_mining.py tests/test_validation.py tests/test_finetune_pairs.py

$(FLOOR_VENV)/.installed: .ci/floors.txt pyproject.toml
	$(PYTHON) -m venv $(FLOOR_VENV)
	@if [ -n "$(TORCH_SPEC)" ]; then $(FLOOR_VENV)/bin/python -m pip install --quiet --progress-bar off "$(TORCH_SPEC)"; fi
	$(FLOOR_VENV)/bin/python -m pip install --quiet --progress-bar off -c .ci/floors.txt -e ".[model]" pytest
	@touch $@

test-floors: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -m pytest -p no:cacheprovider $(FLOOR_TESTS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
