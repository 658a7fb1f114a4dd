# The two set-up commands: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all clean

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

test: $(STAMP)
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (a failure)" >&2; fi; exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache results
