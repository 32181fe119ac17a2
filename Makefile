# HeartSeg developer targets. `make help` lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0
export HEARTSEG_SHARED_DATA ?= ../shared/data

.PHONY: help install services system test demo model bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

CHECK_REQUIREMENTS := $(wildcard requirements/checks-*.txt)

$(STAMP): pyproject.toml setup.py requirements/constraints.txt $(CHECK_REQUIREMENTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -c requirements/constraints.txt -e '.[all,test]' $(addprefix -r ,$(CHECK_REQUIREMENTS))
	touch $(STAMP)

install: $(STAMP) ## Create .venv with torch (CPU), nnunetv2 and the project with every extra (skipped when up to date)

services: ## Make sure PostgreSQL and Redis answer on 127.0.0.1 (start them if not)
	.ci/services.sh

system: ## Install the Debian packages the tests need (Orthanc PACS) when missing
	.ci/system-packages.sh

test: $(STAMP) system services ## Install if needed, start the services, lint, type-check, run the test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

demo: $(STAMP) ## Segment a phantom cohort (and ACDC's validation patients when present) with the shipped model
	$(VENV)/bin/heartseg demo
	@if [ -d "$(HEARTSEG_SHARED_DATA)/acdc/training" ]; then \
		$(VENV)/bin/heartseg reference-indices "$(HEARTSEG_SHARED_DATA)/acdc/training"; \
	fi

bench: $(STAMP) services ## Measure enqueueing, inference, HeartSeg vs nnUNetv2_predict, a simulated GPU host (docs/bench-*.md; about an hour)
	$(PY) -m bench.enqueue
	$(PY) -m bench.inference
	$(PY) -m bench.dicom_seg
	$(PY) -m bench.vs_nnunet
	$(PY) -m bench.pipeline_sim

model: $(STAMP) ## Reproduce the shipped nnU-Net model from the shared ACDC data (hours on 2 CPU cores)
	$(PY) -m workers.training.recipe all

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache
