# The README's two commands: `make app` and `make test`. Both set up .venv/ on a fresh machine
# (idempotent: a second run only checks stamps) and then do their job.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PORT ?= 8501
ADDRESS ?= 127.0.0.1
# torch is pinned in the same pip command as everything else: never a CUDA build by accident.
TORCH := torch==2.13.0

.PHONY: app test test-fast setup setup-dev chromium lint format bench bench-quick zoo clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.stamp-app: pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH) -e .
	@touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.stamp-app
	$(PIP) install --quiet $(TORCH) -e '.[dev,ray]'
	@touch $@

setup: $(VENV)/.stamp-app

setup-dev: $(VENV)/.stamp-dev

## make app: set up and launch the app on the built-in MNIST data (http://$(ADDRESS):$(PORT))
app: setup
	$(VENV)/bin/streamlit run app.py --server.headless true --server.address $(ADDRESS) \
		--server.port $(PORT) --browser.gatherUsageStats false

## Debian's Chromium for the browser tests (root only; without root those tests are skipped)
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium is missing and this user is not root: browser tests will be skipped"; fi

## make test: set up (with dev tools and Chromium) and run the whole test suite
test: setup-dev chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q
	$(VENV)/bin/pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

## make test-fast: the inner loop — lint and the tests not marked slow or browser (a few minutes)
test-fast: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/pytest -m "not slow and not browser" -q; rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: setup-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

zoo: setup
	$(VENV)/bin/dfkd-viz teachers train --all

clean-venv:
	rm -rf $(VENV)

## make bench: the performance figures (~15 min) → benchmarks/results.json, results.md and the
## README's performance table; `make bench-quick` is the same with tiny budgets (< 2 min, CI)
bench: setup-dev chromium
	$(VENV)/bin/python benchmarks/bench.py

bench-quick: setup-dev chromium
	$(VENV)/bin/python benchmarks/bench.py --quick

## make bench-pairs: run every scenario pair once (seed 0; the pair's two runs at once, pairs one
## after another, ~12 min on 2 cores) in the run store → benchmarks/results/pairs.json and the
## table of docs/results/pairs.md; not part of `make bench` (too slow for it)
.PHONY: bench-pairs
bench-pairs: setup
	$(VENV)/bin/python benchmarks/pairs.py --fresh --docs

## make gpu-check: on a machine with a CUDA GPU, one minute per scenario and precision (fp32, bf16,
## fp16) on the GPU path: iterations/s, peak GPU memory, accuracy → benchmarks/results/gpu_check.json.
## Without a GPU it exits with code 3 ("no CUDA GPU found"): not a pass, not a failure; use make bench.
## Needs a torch with CUDA in .venv (PyPI's Linux wheel is one; a +cpu build sees no GPU).
.PHONY: gpu-check
gpu-check: setup
	$(VENV)/bin/python scripts/gpu_check.py

## make docs: serve the documentation site (MkDocs, Material) on http://127.0.0.1:8000, rebuilt on edits
## make docs-build: build it into site/ (strict: broken links, anchors or API references fail)
.PHONY: docs docs-build
docs: setup-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

docs-build: setup-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
