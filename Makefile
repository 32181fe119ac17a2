# HeartSeg developer targets. `make help` lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0
export HEARTSEG_SHARED_DATA ?= ../shared/data

.PHONY: help install services system viewer screenshot test demo model bench clean

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

# OHIF's released viewer for `heartseg viewer`: the npm package @ohif/app at the version (and tarball integrity)
# pinned in scheduler/viewer/dist.py, its dist/ and package.json kept in ohif/ (git-ignored).
OHIF_PIN := scheduler/viewer/dist.py
OHIF_VERSION := $(shell sed -n 's/^OHIF_VERSION = "\(.*\)"/\1/p' $(OHIF_PIN))
OHIF_INTEGRITY := $(shell sed -n 's/^OHIF_INTEGRITY = "\(.*\)"/\1/p' $(OHIF_PIN))
OHIF_STAMP := ohif/.fetched-$(OHIF_VERSION)

$(OHIF_STAMP): $(OHIF_PIN)
	rm -rf ohif && mkdir -p ohif/download
	cd ohif/download && npm pack --silent --json @ohif/app@$(OHIF_VERSION) > pack.json
	grep -qF '"integrity": "$(OHIF_INTEGRITY)"' ohif/download/pack.json || \
		{ echo "@ohif/app@$(OHIF_VERSION): the tarball's integrity is not the one pinned in $(OHIF_PIN)"; exit 1; }
	tar -xzf ohif/download/ohif-app-$(OHIF_VERSION).tgz -C ohif --strip-components=1 \
		package/dist package/package.json package/LICENSE
	rm -rf ohif/download
	touch $@

viewer: $(OHIF_STAMP) ## Fetch OHIF's released viewer (npm @ohif/app, pinned) into ohif/ for `heartseg viewer`

screenshot: $(STAMP) system viewer ## Regenerate docs/viewer.png (the viewer test, in headless Chromium)
	HEARTSEG_VIEWER_SCREENSHOT=docs/viewer.png $(PY) -m pytest tests/test_viewer.py -k browser

test: $(STAMP) system services viewer ## Install if needed, start the services, lint, type-check, run the test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest --durations=15 $(PYTEST_ARGS)

demo: $(STAMP) ## Segment a phantom cohort (and ACDC's validation patients when present) with the shipped model
	$(VENV)/bin/heartseg demo
	@if [ -d "$(HEARTSEG_SHARED_DATA)/acdc/training" ]; then \
		$(VENV)/bin/heartseg reference-indices "$(HEARTSEG_SHARED_DATA)/acdc/training"; \
	fi

bench: $(STAMP) services ## Measure enqueueing, inference, HeartSeg vs nnUNetv2_predict, a simulated GPU host, the record at 100,000 studies, the fold passes, the resampling (docs/bench-*.md; about two hours)
	$(PY) -m bench.enqueue
	$(PY) -m bench.inference
	$(PY) -m bench.dicom_seg
	$(PY) -m bench.vs_nnunet
	$(PY) -m bench.pipeline_sim
	$(PY) -m bench.scale --studies 100000 --json docs/bench-scale-100000.json
	$(PY) -m bench.fold_pass --stand-in-folds 5 --patients 1 --frames 1 --repeats 2 --json docs/bench-fold-pass-cpu.json
	$(PY) -m bench.resampling --json docs/bench-resampling-cpu.json

model: $(STAMP) ## Reproduce the shipped five-fold model, its cross-validation and quality calibration (hours per fold on 2 CPU cores)
	$(PY) -m workers.training.recipe all --half
	$(PY) -m workers.training.crossval all
	$(PY) -m workers.training.calibrate --json docs/qc-crossfold.json
	$(PY) -m workers.training.crossval_report

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache
