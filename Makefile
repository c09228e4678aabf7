# fcn-lightning: the commands a person types. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned here for this project's CPU machines and CI; pyproject keeps
# ranges so users elsewhere resolve the build that fits their hardware.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# pytorch-fcn, only for the equivalence tests and benchmarks: its `fcn` dependency pulls
# chainer, and only its download helpers need it, so it is installed without dependencies.
TORCHFCN := torchfcn==1.9.7
STAMP := $(VENV)/.installed
# The editable install puts the checkout on sys.path (setuptools' compat mode): Hydra finds
# plugins by listing the hydra_plugins namespace, which the default mode's import hook hides,
# so FCN_CONFIG_PATH would do nothing outside the repo (hydra issue #2359).
EDITABLE := --config-settings editable_mode=compat
# `make install CPU=1`: the same torch/torchvision versions from PyTorch's CPU-only wheel
# index, without the CUDA libraries (for machines with no NVIDIA GPU). It decides what a new
# .venv gets: to switch an existing one, remove .venv first. The later installs keep that
# build, since its version (2.x.y+cpu) satisfies the pins.
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
# The environment's size on disk, checked before a first install: torch's CUDA build and its
# libraries are about 5.5 GB of it, the CPU build under 1 GB.
ifeq ($(CPU),1)
TORCH_FROM := --index-url $(TORCH_CPU_INDEX)
TORCH_BUILD := CPU build
VENV_GB := 3
else
TORCH_FROM :=
TORCH_BUILD := CUDA build
VENV_GB := 6
endif
# Extra arguments for the entry points, e.g. make train ARGS="trainer.max_steps=100".
ARGS ?=
# Expanded once, so both steps of mini-paper name the same folder.
ifndef MINI_DIR
MINI_DIR := logs/mini_paper/$(shell date +%Y-%m-%d_%H-%M-%S)
endif

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || free=$$(df -Pk . | awk 'NR == 2 {print int($$4 / 1048576)}'); \
	test -x $(PY) || [ "$$free" -ge $(VENV_GB) ] || { echo "make install: $$free GB free in \
	$$(pwd), the environment needs about $(VENV_GB) GB (torch's $(TORCH_BUILD)); free some space" \
	>&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS) $(TORCH_FROM) || { echo "make install: could not \
	install $(TORCH_PINS)$(if $(TORCH_FROM), from $(TORCH_CPU_INDEX) (CPU=1): is PyTorch's \
	wheel index reachable from here? Without CPU=1 they come from PyPI)" >&2; exit 1; }
	$(PY) -m pip install -q -e ".[test,sweeps,slurm,export,nyud]" $(TORCH_PINS) $(EDITABLE)
	$(PY) -m pip install -q --no-deps $(TORCHFCN)
	touch $@

install: $(STAMP) ## create .venv and install the package (editable) with test, sweep, SLURM, export and nyud extras; CPU=1: torch's CPU-only build (no CUDA)

train: $(STAMP) ## train a small FCN-8s on the embedded synthetic dataset (CPU, minutes)
	$(PY) -m fcn_lightning.train experiment=quickstart $(ARGS)

eval: $(STAMP) ## score a checkpoint: make eval ARGS="ckpt_path=<run>/checkpoints/last.ckpt [split=val]"
	$(PY) -m fcn_lightning.eval $(ARGS)

predict: $(STAMP) ## segment images: make predict ARGS="ckpt_path=... inputs=<image|folder|list.txt>"
	$(PY) -m fcn_lightning.predict $(ARGS)

report: $(STAMP) ## paper-style tables and plots: make report ARGS="logs/train/multiruns/<sweep>"
	$(PY) -m fcn_lightning.report $(ARGS)

# --dist worksteal: a worker that runs out of tests takes pending ones from the other, so
# a few long tests (DDP, sweeps) queued on one worker do not leave the other core idle.
test: $(STAMP) ## run the whole test suite
	$(PY) -m pytest -n 2 --dist worksteal -q

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

flops: $(STAMP) ## caffe vs aligned geometry FLOPs at VOC size
	$(PY) -m fcn_lightning.bench.flops

convert-caffe: $(STAMP) ## convert Caffe weights: make convert-caffe ARGS="fcn8s-heavy-pascal.caffemodel"
	$(PY) -m fcn_lightning.convert_caffe $(ARGS)

export: $(STAMP) ## export a checkpoint: make export ARGS="ckpt_path=... format=onnx|torchscript"
	$(PY) -m fcn_lightning.export $(ARGS)

verify-data: $(STAMP) ## check a dataset preset: make verify-data ARGS="data=paper paths.data_dir=/datasets"
	$(PY) -m fcn_lightning.verify_data $(ARGS)

mini-paper: $(STAMP) ## the skip-architecture study on synthetic data (CPU, ~20 min) + report
	$(PY) -m fcn_lightning.train -m experiment=mini_paper hydra.sweep.dir=$(MINI_DIR) $(ARGS)
	$(PY) -m fcn_lightning.report $(MINI_DIR) --out results/mini_paper \
		--title "Mini-paper: the skip-architecture study on the synthetic dataset (2-core CPU)"

bench: $(STAMP) ## the benchmark suite vs pytorch-fcn and the machine (~10 min); writes results/bench/results.md
	$(PY) -m fcn_lightning.bench --out results/bench/results.md $(ARGS)

bench-quick: $(STAMP) ## the benchmark suite at tiny sizes (a smoke run, numbers meaningless)
	$(PY) -m fcn_lightning.bench --quick --out /tmp/fcn_bench_quick.md $(ARGS)

bench-all: bench bench-data bench-dense flops ## the suite, then the loader's, dense prediction's and FLOPs' own tables

bench-dense: $(STAMP) ## shift-and-stitch vs filter dilation: FLOPs and CPU time
	$(PY) -m fcn_lightning.bench.dense $(ARGS)

bench-data: $(STAMP) ## loader images/s per worker on VOC-size JPEGs
	$(PY) -m fcn_lightning.bench.loader $(ARGS)

clean: ## remove caches (keeps .venv, data/ and logs/)
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

.PHONY: help install train eval predict report test lint format flops export verify-data mini-paper bench bench-quick bench-all bench-dense bench-data clean
