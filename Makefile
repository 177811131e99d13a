# Set-up is part of every target: a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench anchor-env bench-anchor clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.14.1 + torchvision 0.29.1 is the pair that installs and imports together here.
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/evit-export demo

# The suite's modules run in TEST_WORKERS processes (pytest-xdist, whole modules per
# worker so module fixtures are built once); the tests that assert a wall-clock bound
# run afterwards, alone, so a neighbour's load cannot fail them.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not timing"
	$(PY) -m pytest -m "timing and not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# Optional speed anchor for the TFLite target: litert-torch (Google's PyTorch -> LiteRT
# converter) pulls jax, transformers and its own LiteRT, so it gets its own venv. torch
# 2.13.0 is the CPU build on this machine's disk; the project joins without its deps.
ANCHOR_VENV ?= .venv-anchor
ANCHOR_STAMP := $(ANCHOR_VENV)/.installed

$(ANCHOR_STAMP): pyproject.toml
	$(PYTHON) -m venv $(ANCHOR_VENV)
	$(ANCHOR_VENV)/bin/python -m pip install -q --upgrade pip setuptools wheel
	$(ANCHOR_VENV)/bin/python -m pip install -q "torch==2.13.0"
	$(ANCHOR_VENV)/bin/python -m pip install -q "litert-torch==0.10.0"
	$(ANCHOR_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(ANCHOR_STAMP)

anchor-env: $(ANCHOR_STAMP)

# LiteRT on our .tflite vs onnxruntime vs litert-torch's conversion, same weights, one run.
bench-anchor: $(STAMP) $(ANCHOR_STAMP)
	$(PY) benchmarks/bench_tflite.py --anchor-python $(ANCHOR_VENV)/bin/python

clean:
	rm -rf $(VENV) $(ANCHOR_VENV) out runs
