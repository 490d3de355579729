# seglight — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all lint bench docs clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install seglight with the dev extras (skipped when up to date)

# Every output of the demo goes under RUN_DIR (--trainer.default_root_dir):
# `make demo RUN_DIR=outputs/b` leaves the first run's checkpoints, logs and predictions alone.
RUN_DIR ?= outputs/quickstart
CKPT := $(RUN_DIR)/checkpoints/best.ckpt
DEMO := --config configs/quickstart.yaml --trainer.default_root_dir=$(RUN_DIR)

demo: $(STAMP)  ## fit on the built-in data, test (report files), predict PNG masks, export ONNX
	$(PY) -m seglight fit $(DEMO)
	$(PY) -m seglight test $(DEMO) --ckpt_path $(CKPT)
	$(PY) -m seglight predict $(DEMO) --ckpt_path $(CKPT)
	$(PY) -m seglight export --ckpt_path $(CKPT)
	@echo "Predicted masks (palette PNGs): $(RUN_DIR)/predictions/"
	@echo "Test report: $(RUN_DIR)/logs/version_*/test_report.html (and .json, .csv, pictures)"
	@echo "ONNX model: $(RUN_DIR)/checkpoints/best.onnx"

test: $(STAMP)  ## the fast test suite (CPU, a few minutes)
	$(PY) -m pytest -m "not slow"

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest

lint: $(STAMP)  ## ruff check + format check
	$(PY) -m ruff check seglight tests benchmarks
	$(PY) -m ruff format --check seglight tests benchmarks

bench: $(STAMP)  ## benchmarks/overhead.py: Lightning vs plain PyTorch step time
	$(PY) benchmarks/overhead.py

docs: $(STAMP)  ## build the manual (docs/, mkdocs.yml) into site/; --strict: a broken link fails
	$(PY) -m mkdocs build --strict

clean:  ## remove the venv, run outputs and the built docs
	rm -rf $(VENV) outputs lightning_logs .pytest_cache site
