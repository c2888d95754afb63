# fastxlt developer entry points.
#
#   make venv        .venv with torch + `pip install -e '.[dev]'` (compiles fastxlt._C) at the locked versions
#                    of constraints/cpu.txt (+ constraints/gpu.txt with a GPU); idempotent
#   make install     the same install into the current Python environment (no venv)
#   make test        the default test suite (creates .venv first when missing); PYTEST_ARGS=... narrows it
#   make test-latest the default suite against the newest releases, in .venv-latest (UPGRADE=1: no lock)
#   make lock        rewrite constraints/*.txt from .venv (after `make test` passed on it)
#   make test-slow   the slow real-model / real-data tests (pytest -m slow)
#   make demo        the embedded default experiment (`fastxlt run`)
#   make docs        the documentation site (mkdocs, strict) into site/
#   make bench       every benchmark (python -m benchmarks.NAME) with --quick (BENCH_ARGS=... adds options)
#   make clean       build outputs and caches; `make distclean` also removes .venv
#
# Torch: without a GPU (no working nvidia-smi) the CPU wheel torch==$(TORCH_VERSION) is installed
# first, so that the [dev] install does not pull the multi-GB CUDA build. Where that CPU wheel is not
# on the configured indexes, point TORCH_INDEX_URL at PyTorch's (https://download.pytorch.org/whl/cpu).
# With a GPU, pip resolves the default torch wheel from pyproject.toml's dependency.

PYTHON ?= python3
VENV ?= .venv

# The lock: exact versions the default suite passed with. UPGRADE=1 drops it and takes the newest releases
# (torch stays at the CPU wheel $(TORCH_VERSION) without a GPU), into .venv-latest unless VENV is given.
LOCK_CPU := constraints/cpu.txt
LOCK_GPU := constraints/gpu.txt
UPGRADE ?=
ifeq ($(UPGRADE),1)
VENV := .venv-latest
LOCK_ARGS := --upgrade --upgrade-strategy eager
LOCK_FILES :=
else
LOCK_ARGS := -c $(LOCK_CPU)
LOCK_FILES := $(LOCK_CPU) $(LOCK_GPU)
endif

VENV_PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=
# The default suite runs on this many pytest-xdist workers, a test file per worker (its module fixtures built once):
# 2 cores finish it in about 8 minutes instead of 13 (many tests wait on one-thread subprocesses). 0: serial.
TEST_WORKERS ?= 2
BENCH_ARGS ?=


# Tests never touch a model or dataset hub; Triton kernels run in its interpreter on CPU.
OFFLINE_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
TEST_ENV := $(OFFLINE_ENV) TRITON_INTERPRET=1

# The venv is complete when this stamp is newer than everything that shapes the install.
STAMP := $(VENV)/.fastxlt-installed
DEPS_STAMP := $(VENV)/.fastxlt-deps
EXT_SOURCES := CMakeLists.txt $(wildcard csrc/*.cpp csrc/*.h csrc/*.hpp)

.PHONY: venv install test test-latest test-slow demo bench docs lock clean distclean

venv: $(STAMP)

# Dependencies change with pyproject.toml: full install. Only C++ changed: rebuild the extension alone
# (incremental, in build/), without touching dependencies.
$(STAMP): pyproject.toml $(LOCK_FILES) $(EXT_SOURCES) | $(VENV_PY)
	@if [ ! -f $(DEPS_STAMP) ] || [ pyproject.toml -nt $(DEPS_STAMP) ] || [ $(LOCK_CPU) -nt $(DEPS_STAMP) ]; then \
	  $(MAKE) --no-print-directory _full-install INSTALL_PY=$(VENV_PY) && touch $(DEPS_STAMP); \
	else \
	  echo "==> C++ sources changed: rebuilding fastxlt._C"; \
	  $(VENV_PY) -m pip install --no-build-isolation --no-deps -e . ; \
	fi
	@$(VENV_PY) -c "import fastxlt._C as c; print('fastxlt._C ready:', c.build_info())"
	@touch $@

$(VENV_PY):
	@$(PYTHON) -c "import sys; assert sys.version_info >= (3, 10), 'fastxlt needs Python >= 3.10, found ' + sys.version.split()[0]"
	$(PYTHON) -m venv $(VENV) || { echo "make venv: '$(PYTHON) -m venv' failed; on Debian/Ubuntu install python3-venv" >&2; exit 1; }
	$(VENV_PY) -m pip install --upgrade pip

install:
	@$(MAKE) --no-print-directory _full-install INSTALL_PY=$(PYTHON)

# The install steps, shared by `venv` and `install`; INSTALL_PY is the interpreter to install into.
# 1. torch first (CPU wheel when there is no GPU), unless the environment already has one.
# 2. The build requirements into the environment itself, so that CMake's cache points at a stable
#    pybind11 and later C++ rebuilds can run with --no-build-isolation.
# 3. The package, editable, with the [dev] extra; scikit-build-core compiles fastxlt._C.
# Every step installs under the lock (LOCK_ARGS), with a GPU also under constraints/gpu.txt.
_full-install:
	@if $(INSTALL_PY) -c "import torch" >/dev/null 2>&1; then \
	  echo "==> torch already installed: $$($(INSTALL_PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "==> GPU found: the default torch wheel comes with the package dependencies"; \
	else \
	  echo "==> no GPU: installing the CPU torch wheel torch==$(TORCH_VERSION)"; \
	  $(INSTALL_PY) -m pip install "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL)); \
	fi
	@pins=$$(mktemp); echo "torch==$$($(INSTALL_PY) -c 'import torch; print(torch.__version__.split("+")[0])')" > $$pins; \
	extra="-c $$pins"; \
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  extra="$(if $(LOCK_FILES),-c $(LOCK_GPU))"; \
	fi; \
	echo "==> dependencies: $(if $(LOCK_FILES),locked by $(LOCK_CPU),the newest releases (UPGRADE=1))"; \
	$(INSTALL_PY) -m pip install $(LOCK_ARGS) $$extra "scikit-build-core>=0.10" "pybind11>=2.12" && \
	if ! cmake --version >/dev/null 2>&1 || ! $(INSTALL_PY) -c "import re, subprocess, sys; v = re.search(r'(\d+)\.(\d+)', subprocess.run(['cmake', '--version'], capture_output=True, text=True).stdout); sys.exit(0 if v and (int(v[1]), int(v[2])) >= (3, 18) else 1)"; then \
	  echo "==> no CMake >= 3.18 on PATH: installing it from PyPI"; \
	  $(INSTALL_PY) -m pip install $(LOCK_ARGS) $$extra "cmake>=3.18" ninja; \
	fi && \
	echo "$(INSTALL_PY) -m pip install $(LOCK_ARGS) $$extra -e '.[dev]'" && \
	$(INSTALL_PY) -m pip install $(LOCK_ARGS) $$extra -e '.[dev]'; \
	rc=$$?; rm -f $$pins; exit $$rc

test: venv
	@rc=0; $(TEST_ENV) $(VENV_PY) -m pytest -q --durations=25 $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5); check tests/ and PYTEST_ARGS='$(PYTEST_ARGS)'" >&2; fi; \
	exit $$rc

test-slow: venv
	@rc=0; $(TEST_ENV) $(VENV_PY) -m pytest -q -m slow $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-slow: pytest collected no slow tests (exit 5)" >&2; fi; \
	exit $$rc

test-latest:
	@$(MAKE) --no-print-directory test UPGRADE=1

# Rewrite the lock from the venv the suite just passed in: every installed distribution at its version (the
# CPU wheel's +cpu dropped so that the pin also admits the GPU build), and the gpu extra's packages resolved
# for Linux x86-64 under those pins (no GPU needed: pip only reads the wheels' metadata).
lock:
	@[ -x $(VENV_PY) ] || { echo "make lock: no $(VENV) to read the versions from; run 'make test' (or UPGRADE=1 'make test-latest') first" >&2; exit 1; }
	@{ echo "# The CPU lock: exact versions 'make test' passed with ($$(date -u +%Y-%m-%d), $$($(VENV_PY) --version))."; \
	  echo "# Used by 'make venv' and CI as pip constraints; refresh with 'make test-latest' then 'make lock VENV=.venv-latest'."; \
	  $(VENV_PY) -m pip freeze --exclude-editable | sed -E 's/\+cpu$$//' | grep -v '^fastxlt' ; } > $(LOCK_CPU).new
	@mv $(LOCK_CPU).new $(LOCK_CPU) && echo "==> wrote $(LOCK_CPU) ($$(grep -vc '^#' $(LOCK_CPU)) pins)"
	@report=$$(mktemp -d); \
	$(VENV_PY) -m pip --isolated install --dry-run --ignore-installed --quiet --only-binary=:all: --python-version 3.11 \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --target $$report/t --report $$report/gpu.json -c $(LOCK_CPU) \
	  $$($(VENV_PY) -c "import tomllib; print(' '.join(repr(r) for r in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['gpu']))" | tr -d "'") \
	  && $(VENV_PY) -c "import json, sys; r = json.load(open(sys.argv[1])); \
	  print('# The gpu extra (with constraints/cpu.txt): pip install -c constraints/cpu.txt -c constraints/gpu.txt -e .[gpu]'); \
	  print('# torch itself pins its CUDA libraries; resolved by make lock for Linux x86-64.'); \
	  [print(f\"{i['metadata']['name']}=={i['metadata']['version']}\") for i in sorted(r['install'], key=lambda i: i['metadata']['name'].lower())]" \
	  $$report/gpu.json > $(LOCK_GPU) && echo "==> wrote $(LOCK_GPU)"; rm -rf $$report

docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV_PY) -m mkdocs build --strict

demo: venv
	$(OFFLINE_ENV) $(VENV)/bin/fastxlt run

bench: venv
	@for script in benchmarks/*.py; do \
	  [ -e "$$script" ] || { echo "make bench: no benchmarks/*.py yet"; break; }; \
	  case "$$(basename $$script)" in _*) continue;; esac; \
	  module=benchmarks.$$(basename $$script .py); \
	  echo "==> python -m $$module --quick $(BENCH_ARGS)"; \
	  $(OFFLINE_ENV) $(VENV_PY) -m $$module --quick $(BENCH_ARGS) || exit $$?; \
	done

clean:
	rm -rf build dist _skbuild site .pytest_cache *.egg-info $(STAMP)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
