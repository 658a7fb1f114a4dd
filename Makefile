# The two set-up commands: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast calibrate clean gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# CPU smoke sweep of the three seed ablations on SynthSign, then the comparison table.
demo: $(STAMP)
	$(BIN)/t2s-ray sweep --gpus 0 --scale smoke --storage ./results --name demo-$$(date +%Y%m%d-%H%M%S)

# The full suite (what CI runs), in TEST_WORKERS processes (pytest-xdist; 0 runs it in this one), handed out two
# tests at a time so that the slow tests, which come first, spread over the workers; test-fast, the inner loop,
# leaves out the end-to-end tests marked slow (those that start Ray or train for more than a few seconds), in as
# many processes. Both list their 15 slowest tests.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --maxschedchunk 2 --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (a failure)" >&2; fi; exit $$rc

test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --maxschedchunk 2 --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-fast: pytest collected no tests (a failure)" >&2; fi; exit $$rc

# The known-effect check: baseline vs the no_text control x 3 seeds at the small scale (2 CPU cores: ~12 min).
calibrate: $(STAMP)
	$(BIN)/t2s-ray calibrate --storage ./results

clean:
	rm -rf $(VENV) .pytest_cache results

# GPU readiness (needs CUDA; exit 2 without): train-step time, memory and MFU per DiT size at full shape in
# bf16, the memory sampler's NVML columns and a 3-trial sweep packed on one GPU -> gpu_check.json. No install
# step: the venv's python if there is one, else $(PYTHON) with torch and transformers (PYTHONPATH=., no Ray needed).
gpu-check:
	PYTHONPATH=. $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) scripts/gpu_check.py $(GPU_CHECK_ARGS)
