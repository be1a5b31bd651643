# Two entry points (README): `make demo` runs the audit on the bundled default, `make test` runs the suite.
# Both build the environment first: torch 2.13.0 (the CPU wheel) is installed before anything that
# depends on torch, so that pip never resolves a CUDA build.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.spray-installed

.PHONY: env demo test bench clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	$(BIN)/python -m pip install --quiet --no-deps "zennit==0.5.1"
	# real model code for the LRP tests and benchmarks (random init, nothing downloads). --no-deps: these
	# declare torch (and LXT transformers); torchvision's wheel is a CUDA build whose compiled ops spray's
	# tests stub out (spray.testing.import_torchvision)
	$(BIN)/python -m pip install --quiet --no-deps "torchvision==0.28.0" "timm==1.0.31" "lxt==2.1"
	touch $(STAMP)

demo: env
	$(BIN)/spray demo

test: env
	$(BIN)/python -m pytest -q

bench: env
	$(BIN)/python -m pip install --quiet "corelay==1.0.0"   # the SpRAy baseline; benchmarks only
	$(BIN)/python benchmarks/bench_lrp.py
	$(BIN)/python benchmarks/bench_explain.py
	$(BIN)/python benchmarks/bench_spray.py
	$(BIN)/python benchmarks/bench_loader.py
	$(BIN)/python benchmarks/bench_detect.py                  # trains and caches the beds on first use
	$(BIN)/python benchmarks/bench_detect.py --set held-out

clean:
	rm -rf $(VENV) reports/*/ .pytest_cache
