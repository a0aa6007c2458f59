# `make demo` sets everything up and trains a GhostNet on real data (a few minutes on a laptop CPU);
# `make test` sets everything up and runs the whole test suite.
# Needs only Python >= 3.10 and make; uv builds .venv from the lock file.
#   PYTHON=python3.12  the project's Python: .venv is built with it (default: uv's choice); in an activated
#                      conda env, PYTHON=python builds it from the env's Python
#   UV=/path/to/uv     the uv to use (default: `uv` on PATH, else `$(PYTHON) -m uv`)
PYTHON ?= python3
UV ?= $(or $(shell command -v uv 2>/dev/null),$(PYTHON) -m uv)
PYTEST_ARGS ?=
# the optional parts the checks and tests use: ONNX, COCO, and the edge runtimes (OpenVINO, ExecuTorch, LiteRT, ncnn)
EXTRAS := --extra onnx --extra detection --extra openvino --extra executorch --extra litert --extra ncnn
# only a Python the user named decides .venv's interpreter
SYNC_PYTHON := $(if $(filter command line environment,$(origin PYTHON)),--python $(PYTHON))

.PHONY: setup lint test test-all demo bench clean

# Without uv, it is installed with pip only where that touches nothing shared: into the active venv or conda
# env, else for this user; never into an externally managed (PEP 668) system Python.
NO_UV := uv not found: install it with `pipx install uv` or `curl -LsSf https://astral.sh/uv/install.sh | sh`, \
	or run `make setup UV=/path/to/uv`
define WHERE_PIP
import importlib.util as u, os, sys, sysconfig as s
in_env = sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX") == sys.prefix
managed = os.path.exists(os.path.join(s.get_path("stdlib"), "EXTERNALLY-MANAGED")) and not in_env
print("none" if u.find_spec("pip") is None or managed else "env" if in_env else "user")
endef
export WHERE_PIP

setup:
	@if ! $(UV) --version >/dev/null 2>&1; then \
		if [ "$(origin UV)" != file ]; then echo 'make setup: UV=$(UV) does not run `$(UV) --version`' >&2; exit 1; fi; \
		where=$$($(PYTHON) -c "$$WHERE_PIP" 2>/dev/null); \
		case "$$where" in \
			env) echo "make setup: installing uv with $(PYTHON) -m pip"; $(PYTHON) -m pip install --quiet uv ;; \
			user) echo "make setup: installing uv for this user: $(PYTHON) -m pip install --user uv"; \
				$(PYTHON) -m pip install --quiet --user uv ;; \
			*) echo 'make setup: $(NO_UV)' >&2; exit 1 ;; \
		esac || { echo 'make setup: $(NO_UV)' >&2; exit 1; }; \
	fi
	$(UV) sync --locked $(EXTRAS) $(SYNC_PYTHON)

# The structure and style checks CI runs before the tests: the import contracts (layers, no deprecated
# paths inside the package), ruff's lint and format, and mypy on src/.
lint: setup
	$(UV) run --locked $(EXTRAS) lint-imports
	$(UV) run --locked $(EXTRAS) ruff check src tests benchmarks scripts
	$(UV) run --locked $(EXTRAS) ruff format --check src tests benchmarks scripts
	$(UV) run --locked $(EXTRAS) mypy

test: setup
	$(UV) run --locked $(EXTRAS) pytest -q $(PYTEST_ARGS)

# The slow tests too (long training runs, marked `slow`).
test-all: setup
	$(UV) run --locked $(EXTRAS) pytest -q -m "slow or not slow" $(PYTEST_ARGS)

demo: setup
	$(UV) run --locked ghostnet train --config digits --output-dir runs

# Loader throughput against the train step (see docs/RESULTS.md).
bench: setup
	$(UV) run --locked python benchmarks/data_loader.py

clean:
	rm -rf .venv .pytest_cache
