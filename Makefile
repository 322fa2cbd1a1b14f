# Fresh-machine entry points. `make demo` and `make test` create .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SHELL  := /bin/bash

.PHONY: demo test test-fast venv clean help

help:
	@echo "make demo   - run the main job on the built-in default (creates .venv on first use)"
	@echo "make test   - run the whole test suite (creates .venv on first use)"
	@echo "make venv   - only create/update the virtual environment"

venv:
	@scripts/setup_venv.sh

demo: venv
	$(PY) -m pmt_perception.demo

test: venv
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build install log .pytest_cache
