# The two set-up commands of the README: `make demo` (the main job on the embedded default) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch 2.13.0 lies on these machines' disk; pip takes it. Override for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint types pytest install browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# Debian's Chromium and its driver, for the browser tests (tests/browser), installed when missing. Where apt
# cannot (not root, no package registry) this says so and goes on: the browser tests then skip with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium and chromium-driver (browser tests)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
	    >/dev/null 2>&1 || echo "note: apt could not install chromium + chromium-driver; browser tests will skip"; }

install: $(STAMP) browser

demo: $(STAMP)
	$(BIN)/sweep-service run examples/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy sweep_service workers db api bench tests

# Parallel over the machine's cores (pytest-xdist); PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= auto
pytest: $(STAMP) browser
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=15

test: lint types pytest

bench: $(STAMP)
	$(BIN)/python bench/trainer_throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
