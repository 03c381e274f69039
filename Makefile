# The two entry points of the README. Each installs what it needs first
# (scripts/install.sh is idempotent and cached: seconds after the first run).
VENV ?= .venv
PY := $(VENV)/bin/python
export NASDET_VENV := $(abspath $(VENV))

.PHONY: install demo test lint

install:
	@bash scripts/install.sh

# A second `make demo` continues (or, when finished, just re-reports) the same study.
# Its report, $(DEMO_DIR)/report/report.md, opens with the headline: searched vs base at
# no more MACs, fine-tuning vs scratch, ID per layer of the best vs the base.
DEMO_DIR ?= work_dirs/demo
demo: install
	$(PY) tools/search.py configs/search/tiny_synth.yaml --work-dir $(DEMO_DIR) \
		$$([ -f $(DEMO_DIR)/study.db ] && echo --resume) $(DEMO_ARGS)

# PYTHONFAULTHANDLER: a crash (also one at interpreter exit, after pytest's own handler
# is gone) prints every thread's stack instead of a bare "Segmentation fault".
test: install
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check nasdet tools tests benchmarks
	$(VENV)/bin/lint-imports
