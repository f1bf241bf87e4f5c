# seppo — every entry point of the project. `make help` lists them.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.seppo-installed
# CPU wheel of torch installed first; GPU users put their CUDA torch into $(VENV) beforehand and it is kept.
TORCH  ?= torch==2.13.0

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0

PROFILE ?= mini
BENCH_MODELS ?= tiny,sd15

.PHONY: help install lib test check demo smoke reproduce controls bench soak dist check-dist lab-check docs clean

help:  ## this list
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(STAMP)  ## create .venv: torch (CPU wheel unless one is present), then `pip install -e .[dev]`

$(STAMP): settings.ini setup.py pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	rm -rf seppo.egg-info  # stale in-tree metadata would shadow the entry points (seppo.plugins) of this install
	$(PY) -m pip install -q -e ".[dev]" "torch==$$($(PY) -c 'import importlib.metadata as m; print(m.version("torch"))')"  # keep that torch
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

lib: $(STAMP)  ## export seppo/ from the notebooks
	$(BIN)/nbdev_export

test: $(STAMP)  ## run every library notebook and tests/ under pytest, two workers (one test file each at a time; one thread each)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile tests

check: $(STAMP)  ## fail on unclean notebooks, seppo/ out of sync with nbs/, or lint
	$(BIN)/nbdev_clean
	git diff --exit-code --stat -- nbs || { echo "notebooks are not clean: run nbdev_clean and commit"; exit 1; }
	$(BIN)/nbdev_export
	test -z "$$(git status --porcelain -- seppo)" || { git status --short -- seppo; echo "seppo/ is out of sync with nbs/: run make lib and commit"; exit 1; }
	$(BIN)/ruff check seppo tests setup.py

demo: $(STAMP)  ## a few SePPO updates of a tiny random model, with a loss/AAF summary
	$(BIN)/seppo demo

reproduce: $(STAMP)  ## run the missing or stale runs of PROFILE (default mini), then every report and the README's tables; DRY_RUN=1 only plans and estimates
	$(BIN)/seppo reproduce --profile $(PROFILE) $(if $(DRY_RUN),--dry-run,)
	$(if $(DRY_RUN),,$(if $(filter mini,$(PROFILE)),$(BIN)/seppo readme,))

controls: $(STAMP)  ## the control sweep that chose the world's training budget (results/controls), then the README's tables
	$(BIN)/seppo reproduce --profile controls
	$(BIN)/seppo readme

bench: $(STAMP)  ## time SFT, Diffusion-DPO and SePPO (tiny and SD1.5-architecture models) beside the sampling floor; writes results/bench/cpu.md; BENCH_MODELS=tiny for the quick half
	$(BIN)/seppo bench --models $(BENCH_MODELS)

smoke: $(STAMP)  ## the reproduce pipeline at toy scale (one seed, a few updates) into build/smoke — what CI runs
	$(BIN)/seppo reproduce --profile smoke

soak: $(STAMP)  ## 2,000 SePPO updates of the tiny model with a capped pool: flat memory, exact pool size, exact resume (results/soak; about 10 min, not in CI)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python scripts/soak.py

dist: $(STAMP)  ## build the sdist and the wheel into dist/
	rm -rf dist && $(PY) -m build --no-isolation --outdir dist .

check-dist: $(STAMP)  ## the wheel alone in a fresh venv (torch first, no dev extras): seppo demo, config, train, import from outside the repo (about 2 min)
	bash scripts/check_dist.sh

lab-check: $(STAMP)  ## open notebooks in JupyterLab in headless Chromium (Debian's: apt-get install chromium), run every cell; fails on an error or a kernel dialog; screenshots in build/lab-check
	$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install -q playwright
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/lab_check.py

docs: $(STAMP)  ## execute the library notebooks and render them with an index page into build/docs (nbconvert, no Quarto)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python scripts/docs.py

clean:  ## remove build artefacts (keeps .venv)
	rm -rf build dist *.egg-info _proc _docs .pytest_cache .ruff_cache
