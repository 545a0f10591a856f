# Two commands for a fresh machine (Python 3.11+, no GPU, no conda):
#   make lab    set up .venv and open JupyterLab on the quickstart notebook (demo scene, no network)
#   make test   set up .venv and run the whole test suite (unit, notebooks, browser)
# Both are idempotent: the environment is rebuilt only when a requirements file changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: lab test env bench clean-env

env: $(STAMP)

$(STAMP): requirements/base.txt requirements/test.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/test.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tessera_explore)" >/dev/null
	@touch $(STAMP)

lab: $(STAMP)
	MALLOC_ARENA_MAX=2 $(VENV)/bin/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/01_quickstart.ipynb

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
