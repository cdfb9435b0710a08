# resnet-edge: `make demo` and `make test` are the whole quick start.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.locked
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
# The venv's bin on PATH: onnx2tf called by hand runs the `onnxsim` program (convert runs it in-process).
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup test demo demo-docs device-check-arm64 lock clean

EXT    := $(VENV)/torch_extensions/.built
setup: $(STAMP) $(EXT) $(FMNIST)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

# NNCF's torch CPU extension, compiled once into the venv (quantization/__init__.py points torch there).
$(EXT): $(STAMP)
	@echo "compiling NNCF's torch CPU extension once (about a minute on 2 cores; QAT and magnitude pruning use it)"
	$(BIN)/python -c "from quantization.nncf_ops import build_extension; print(build_extension())" \
	  > $(VENV)/nncf-extension.log 2>&1 || { tail -20 $(VENV)/nncf-extension.log; exit 1; }
	touch $@

# Fashion-MNIST comes from Debian (no downloads at run time).
$(FMNIST):
	@command -v apt-get >/dev/null || { echo "error: $(FMNIST) missing and no apt-get: install the Debian package dataset-fashion-mnist"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y dataset-fashion-mnist || \
	  { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update && $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y dataset-fashion-mnist; }

# Two pytest workers (pytest-xdist): the suite's time is mostly one-threaded converters; TEST_WORKERS=0 runs it in
# one process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The main job: train ResNet-18 on Fashion-MNIST, export, convert, quantize, prune, fit a budget, benchmark, report
# (runs/default). The demo's budget is a file size (2.5 MiB, under the uniform structured50 file's 2.74): a size is
# the same on every host, where a latency budget that one host meets another cannot reach (README: Fit to a budget).
DEMO_BUDGET ?= budget_mib=2.5
demo: setup
	$(BIN)/resnet-edge summary resnet18 image_size=32 in_channels=1 num_classes=10
	$(BIN)/resnet-edge run name=default $(DEMO_BUDGET)

# The README's demo figures come from here: after `make demo` on a fresh clone, copy its report into docs/.
demo-docs:
	mkdir -p docs && cp runs/default/report/report.md docs/demo-report.md
	cp $(addprefix runs/default/report/,pareto.png layers.png latency.png memory.png fit.png) docs/

# The device bundle of RUN on arm64 under qemu-user (root; minutes; not part of test or CI): device_tests/arm64_check.py.
RUN ?= runs/default
ARM64_DEBS := mmdebstrap qemu-user-static binfmt-support
device-check-arm64: setup
	@command -v mmdebstrap >/dev/null && test -x /usr/bin/qemu-aarch64-static && command -v update-binfmts >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get install -y $(ARM64_DEBS); } || true
	$(BIN)/python device_tests/arm64_check.py $(RUN)

# Re-resolve the lock from pyproject.toml's ranges (needs the registry).
lock:
	rm -rf /tmp/resnet-edge-lock && $(PYTHON) -m venv /tmp/resnet-edge-lock
	/tmp/resnet-edge-lock/bin/pip install --quiet --upgrade "pip>=24" && /tmp/resnet-edge-lock/bin/pip install --quiet -e ".[test]"
	{ echo "# resnet-edge locked environment: Python 3.11, CPU (x86_64). Regenerate with 'make lock'."; \
	  /tmp/resnet-edge-lock/bin/pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/+cpu$$//'; } > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
