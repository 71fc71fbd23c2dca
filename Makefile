# make test : environment, unit tests, notebooks on the smoke preset, strict book build
# make book : environment, missing quick runs, HTML book in _build/html
SHELL := /bin/bash
PY := .venv/bin/python
SHARED ?= ../shared
export LOP_DATA ?= $(CURDIR)/.cache/data
SWEEPS := $(wildcard book/experiments/sweeps/*.yaml)

.PHONY: venv data runs book build test unit lint clean
venv: .venv/.ready

.venv/.ready: requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' | xargs -I{} sh -c 'echo "$(CURDIR)" > {}/lop_core_repo.pth'
	touch $@

# Seed the data root from ../shared/data when it is there (machines without network): a copy of
# MNIST (torchvision writes beside it), a link to the CIFAR-10 JPEG tree (read only; its decoded
# cache goes to $(LOP_DATA)/lop_cache).
data:
	@if [ -d "$(SHARED)/data/MNIST/raw" ] && [ ! -e "$(LOP_DATA)/MNIST/raw/train-images-idx3-ubyte.gz" ]; then \
		mkdir -p "$(LOP_DATA)/MNIST/raw" && cp "$(SHARED)"/data/MNIST/raw/*.gz "$(LOP_DATA)/MNIST/raw/"; fi
	@if [ -d "$(SHARED)/data/cifar10" ] && [ ! -e "$(LOP_DATA)/cifar10" ]; then \
		mkdir -p "$(LOP_DATA)" && ln -s "$$(cd "$(SHARED)/data/cifar10" && pwd)" "$(LOP_DATA)/cifar10"; fi

runs: venv data
	$(PY) -m lop_core sweep $(SWEEPS) --preset quick --notebook

# --all: re-read every chapter, so figures follow new runs even when the chapter source did not change
build: venv
	.venv/bin/jupyter-book build . --all -W -n --keep-going

book: runs build

unit: venv data
	$(PY) -m pytest -q

lint: venv
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

test: unit lint build

clean:
	rm -rf _build
