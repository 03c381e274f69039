# The two entry points of the README. Each installs what it needs first
# (scripts/install.sh is idempotent and cached: seconds after the first run).
VENV ?= .venv
PY := $(VENV)/bin/python
export NASDET_VENV := $(abspath $(VENV))

.PHONY: install demo test lint

install:
	@bash scripts/install.sh

demo: install
	$(PY) tools/train.py configs/tiny_faster_rcnn_synth.py

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check nasdet tools tests benchmarks
