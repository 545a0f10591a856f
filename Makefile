# Two commands for a fresh machine (Python 3.12+, no GPU, no conda):
#   make lab    set up .venv and open JupyterLab at the repository root on the quickstart notebook
#               (demo scene, no network; notebooks/ and workshop/ are both in its file browser)
#   make test   set up .venv and run the whole test suite (unit, notebooks, browser)
# Both are idempotent: the environment is rebuilt only when a requirements file changes, and
# from scratch when .venv holds a Python older than 3.12 (or no working one).
#
# Overrides (docs/design/environment.md):
#   PYTHON=/path/to/python3.12   the interpreter for a new .venv; by default scripts/find-python.sh
#                                looks for python3.13, python3.12, python3, then pyenv's versions
#   TORCH_INDEX=auto|cpu|cuda|default|<index URL>   where PyTorch comes from. auto (the default):
#                                the PyTorch CPU index on Linux without an NVIDIA GPU (no nvidia-smi)
#                                when it answers within 5 s, else PyPI's build (CUDA on Linux x86_64);
#                                cpu: the CPU index, or fail; cuda / default: PyPI's build
#   An existing .venv keeps its torch: `make clean-env` first to switch.

PYTHON      ?=
TORCH_INDEX ?= auto
VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
PIP       := $(PY) -m pip install --quiet --disable-pip-version-check
TORCH_PIN := $(shell sed -n 's/^\(torch==[^ ;\#]*\).*/\1/p' requirements/base.txt)
CPU_INDEX := https://download.pytorch.org/whl/cpu
ifeq ($(filter auto cpu cuda default http://% https://% file://%,$(TORCH_INDEX)),)
$(error TORCH_INDEX=$(TORCH_INDEX): use auto, cpu, cuda, default or an index URL)
endif

.PHONY: lab test env bench clean-env

env: $(STAMP)

# .venv missing, broken or older than 3.12: made again with the interpreter scripts/find-python.sh
# names (evaluated only then; with no such interpreter make stops with one line saying what to install)
VENV_OK := $(shell $(PY) -c 'import sys; print(sys.version_info >= (3, 12))' 2>/dev/null)
ifneq ($(VENV_OK),True)
NEW_PYTHON = $(or $(shell PYTHON='$(PYTHON)' bash scripts/find-python.sh 2>/dev/null),$(error $(shell PYTHON='$(PYTHON)' bash scripts/find-python.sh 2>&1 >/dev/null)))
.PHONY: venv-stale
venv-stale: ;
$(STAMP): venv-stale
endif

$(STAMP): requirements/base.txt requirements/test.txt pyproject.toml scripts/find-python.sh
ifneq ($(VENV_OK),True)
	rm -rf $(VENV)
	$(NEW_PYTHON) -m venv $(VENV)
endif
	@want='$(TORCH_PIN)'; \
	if $(PY) -c "import importlib.metadata as m, sys; sys.exit(m.version('torch').split('+')[0] != '$${want#torch==}')" 2>/dev/null; \
	then exit 0; fi; \
	url=; \
	case '$(TORCH_INDEX)' in \
	  cpu) url='$(CPU_INDEX)' ;; \
	  cuda|default) ;; \
	  http://*|https://*|file://*) url='$(TORCH_INDEX)' ;; \
	  auto) \
	    if [ "$$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then \
	      if $$(command -v timeout >/dev/null && echo timeout 8) $(PY) -c \
	           "import urllib.request as u; u.urlopen('$(CPU_INDEX)/torch/', timeout=5)" >/dev/null 2>&1; \
	      then url='$(CPU_INDEX)'; \
	      else echo "torch: the PyTorch CPU index ($(CPU_INDEX)) is not reachable (5 s):" \
	                "PyPI's build instead (on Linux it brings CUDA, several GB; TORCH_INDEX= to choose)"; fi; \
	    fi ;; \
	esac; \
	[ -n "$$url" ] || exit 0; \
	echo "torch: $$want from $$url"; \
	$(PIP) --index-url "$$url" "$$want" && exit 0; \
	[ '$(TORCH_INDEX)' = auto ] || exit 1; \
	echo "torch: the CPU index failed; PyPI's build instead"
	$(PIP) -r requirements/test.txt
	$(PIP) --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tessera_explore)" >/dev/null
	@touch $(STAMP)

# through `tessera-explore lab` (tessera_explore/cli.py): rooted at the current folder, the repository
# root, since the notebook lies below it; MALLOC_ARENA_MAX=2 and --allow-root (as root) are set there
lab: $(STAMP)
	$(VENV)/bin/tessera-explore lab notebooks/01_quickstart.ipynb

# the notebooks run from a temporary copy, so nothing they write lands in the checkout
test: $(STAMP)
	@bash scripts/system-deps.sh
	@nb=$$(mktemp -d) && cp notebooks/*.ipynb workshop/solutions.ipynb $$nb/ && \
	$(PY) -m ruff check . && \
	$(PY) -m pytest -q -c pyproject.toml --rootdir=. --nbmake --nbmake-timeout=900 tests $$nb; rc=$$?; rm -rf $$nb; exit $$rc

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-env:
	rm -rf $(VENV)
