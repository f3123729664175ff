# Score Matching for Energy-Based Models: every set-up step lives here (README.md explains).
#   make book    create/refresh .venv, install everything, build the HTML (every chapter executed)
#   make test    create/refresh .venv, install everything, unit tests + every chapter under nbval
#   make rerun CHAPTER=chapters/09_deen.md PARAMS="-p device cuda -p n_steps 20000"
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
# The CPU build of PyTorch that this machine keeps on disk; elsewhere pip downloads it.
# Override for a GPU machine, e.g. make test TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC  ?= torch==2.13.0
MATHJAX_VER ?= 3.2.2
JOBS        ?= 2
BOOK_EXECUTE ?= cache
PYTEST_ARGS ?=
CHAPTERS    := $(sort $(wildcard chapters/*.md))
MATHJAX     := book/_static/mathjax/tex-chtml.js
STAMP       := $(VENV)/.installed

export OMP_NUM_THREADS ?= 1
export PYDEVD_DISABLE_FILE_VALIDATION = 1
# the book, the tests and reruns read and write recorded results here (smlib.book.results)
export SMLIB_RESULTS_DIR ?= $(CURDIR)/results

.PHONY: help venv lab lint book test unit chapters rerun browser-deps test-browser bench device-check device-check-dry clean distclean

help:
	@sed -n '2,5p' Makefile

## --- environment --------------------------------------------------------------------------
# --no-compile: pip would byte-compile every installed file (torch alone: ~2,300 files, half of a
# fresh install's time); Python compiles the ~1/3 it imports on first use instead, which is why
# PYTHONDONTWRITEBYTECODE is not passed on to the commands below.
unexport PYTHONDONTWRITEBYTECODE
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile --upgrade pip
	$(PY) -m pip install --quiet --no-compile $(TORCH_SPEC)
	$(PY) -m pip install --quiet --no-compile -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null
	@touch $@

venv: $(STAMP)

# MathJax from the npm registry, served by the book itself: the HTML reads offline.
$(MATHJAX):
	@command -v npm >/dev/null || { echo "error: npm is needed to fetch MathJax (install Node.js)"; exit 1; }
	rm -rf _build/npm && mkdir -p _build/npm book/_static
	cd _build/npm && npm pack --silent mathjax@$(MATHJAX_VER) >/dev/null
	tar -xzf _build/npm/mathjax-$(MATHJAX_VER).tgz -C _build/npm
	rm -rf book/_static/mathjax && cp -r _build/npm/package/es5 book/_static/mathjax
	@test -f $@

## --- book ---------------------------------------------------------------------------------
# What a chapter's outputs depend on besides its code: smlib, the recorded results, the installed
# packages. The book's execution cache is dropped when this key changes, and `make test` stores the
# chapters it executed under _build/executed/<key>, which `make book` offers to that cache
# (book/prime_cache.py), so CI executes each chapter once and no page shows a stale result.
EXEC_KEY = (find smlib results -type f \( -name '*.py' -o -name '*.json' \) -print0 | sort -z | xargs -0 sha256sum; \
            $(PY) -m pip freeze) | sha256sum | cut -c1-16

book: $(STAMP) $(MATHJAX)
	@mkdir -p _build
	@key=$$($(EXEC_KEY)); \
	 if [ "$$(cat _build/.cache-key 2>/dev/null)" != "$$key" ]; then \
	   rm -rf _build/.jupyter_cache _build/html _build/.doctrees _build/jupyter_execute; echo "$$key" > _build/.cache-key; fi; \
	 if [ -d "_build/executed/$$key" ] && [ "$(BOOK_EXECUTE)" = cache ]; then \
	   $(PY) book/prime_cache.py "_build/executed/$$key" _build/.jupyter_cache; fi
	@# BOOK_EXECUTE=off builds without running chapters (a quick reference check); figure labels
	@# only exist in executed notebooks, so that mode alone ignores unresolved {numref}s.
	$(PY) -c "import yaml; c=yaml.safe_load(open('_config.yml')); m='$(BOOK_EXECUTE)'; c['execute']['execute_notebooks']=m; \
	  m == 'off' and c['sphinx']['config'].setdefault('suppress_warnings', []).append('ref.numref'); \
	  yaml.safe_dump(c, open('_build/_config.yml','w'))"
	BOOK_JOBS=$(JOBS) $(PY) book/build.py . --config _build/_config.yml -W -n --keep-going
	@$(PY) -c "import json,pathlib; p=pathlib.Path('_build/html/reports'); print('execution reports:', sorted(x.name for x in p.glob('*'))) if p.exists() else None"
	@echo "book: _build/html/index.html"

## --- tests --------------------------------------------------------------------------------
# One pytest run: ruff, the unit tests and every chapter (nbval executes each code cell; an assert
# that fails fails the run; chapters/conftest.py loads the plugin). A run that collects nothing
# exits 5 and so fails too. Each chapter that passes is kept for `make book` (see above).
test: $(STAMP)
	$(PY) -m ruff check smlib tests bench book chapters
	@key=$$($(EXEC_KEY)); rm -rf _build/executed; \
	 SMLIB_EXECUTED_DIR=_build/executed/$$key $(PY) -m pytest -n $(JOBS) --dist loadfile --nbval-lax \
	    --nbval-current-env --nbval-cell-timeout=900 --durations=15 tests $(CHAPTERS) $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadfile tests $(PYTEST_ARGS)

chapters: $(STAMP)
	@key=$$($(EXEC_KEY)); \
	 SMLIB_EXECUTED_DIR=_build/executed/$$key $(PY) -m pytest -n $(JOBS) --dist loadfile --nbval-lax \
	    --nbval-current-env --nbval-cell-timeout=900 $(CHAPTERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check smlib tests bench book chapters

## --- chapters as tutorials: JupyterLab on this environment -------------------------------------
# Opens every chapters/*.md as a notebook (jupytext; edits are saved back to the .md) with the
# kernel that has smlib. JupyterLab is the [lab] extra, not part of `make test` or `make book`.
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
LAB_ARGS ?=
lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[lab]"
	$(PY) -c "import json,pathlib; p=pathlib.Path('$(LAB_OVERRIDES)'); p.parent.mkdir(parents=True, exist_ok=True); \
	  json.dump({'@jupyterlab/docmanager-extension:plugin': {'defaultViewers': {'markdown': 'Jupytext Notebook', 'myst': 'Jupytext Notebook'}}}, p.open('w'))"
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) $(LAB_ARGS) \
	    chapters/01_ebm_maximum_likelihood.md

## --- reruns at other parameters (papermill) -------------------------------------------------
rerun: $(STAMP)
	@test -n "$(CHAPTER)" || { echo 'usage: make rerun CHAPTER=chapters/NN_name.md PARAMS="-p name value ..."'; exit 2; }
	SMLIB_RERUN_COMMAND='make rerun CHAPTER=$(CHAPTER) PARAMS="$(PARAMS)"' \
	    $(PY) -m smlib.book.rerun $(CHAPTER) $(PARAMS)

## --- the built HTML in a real browser -------------------------------------------------------
browser-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	   if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	   else echo "error: install Debian's chromium and chromium-driver (sudo apt-get install chromium chromium-driver)"; exit 1; fi; fi

test-browser: $(STAMP) browser-deps
	@test -f _build/html/index.html || { echo "error: build the book first (make book)"; exit 1; }
	SMLIB_REQUIRE_BROWSER=1 $(PY) -m pytest -m browser tests/test_browser.py $(PYTEST_ARGS)

## --- benchmarks -------------------------------------------------------------------------------
bench: $(STAMP)
	SMLIB_KEEP_LARGE_BLOCKS=1 $(PY) -m bench $(BENCH_ARGS)

## --- the lent GPU machine (issue 15): one prepared run; its dry run here ------------------------
# On the GPU machine (its own python3, the checkout on PYTHONPATH, results under $$OUT):
device-check:
	bash bench/device_check.sh cuda

# Here, in an environment like the GPU one (papermill, jupytext, IPython unimportable), small sizes:
device-check-dry: $(STAMP)
	OUT=_build/device_check PYTHON=$(PY) bash bench/device_check.sh cpu --tiny --block-book-tools --block-absent

clean:
	rm -rf _build

distclean: clean
	rm -rf $(VENV) book/_static/mathjax
