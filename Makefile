# `make demo` sets everything up and trains a GhostNet on real data (a few minutes on a laptop CPU);
# `make test` sets everything up and runs the whole test suite.
# Needs only Python >= 3.10 and make; uv (from PyPI) builds .venv from the lock file.
PYTHON ?= python3
UV := $(PYTHON) -m uv
PYTEST_ARGS ?=

.PHONY: setup lint test test-all demo bench clean

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user uv \
		|| $(PYTHON) -m pip install --quiet --break-system-packages uv
	$(UV) sync --locked --extra onnx --extra detection

# The structure and style checks CI runs before the tests: the import contracts (layers, no deprecated
# paths inside the package), ruff's lint and format, and mypy on src/.
lint: setup
	$(UV) run --locked --extra onnx --extra detection lint-imports
	$(UV) run --locked --extra onnx --extra detection ruff check src tests benchmarks scripts
	$(UV) run --locked --extra onnx --extra detection ruff format --check src tests benchmarks scripts
	$(UV) run --locked --extra onnx --extra detection mypy

test: setup
	$(UV) run --locked --extra onnx --extra detection pytest -q $(PYTEST_ARGS)

# The slow tests too (long training runs, marked `slow`).
test-all: setup
	$(UV) run --locked --extra onnx --extra detection pytest -q -m "slow or not slow" $(PYTEST_ARGS)

demo: setup
	$(UV) run --locked ghostnet train --config digits --output-dir runs

# Loader throughput against the train step (see docs/RESULTS.md).
bench: setup
	$(UV) run --locked python benchmarks/data_loader.py

clean:
	rm -rf .venv .pytest_cache
