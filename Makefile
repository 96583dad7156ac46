# Thin wrapper: every target creates or refreshes the local virtualenv first, then runs edgepipe.
# torch is installed first and pinned (a plain `torch` requirement pulls a multi-GB CUDA build);
# override TORCH_SPEC for CUDA or Jetson wheels, e.g. make deploy TORCH_SPEC='torch==2.5.0'.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TARGET ?= cpu
CONFIG ?= pipeline/configs/demo.yaml
OUT ?= runs/$(TARGET)
DIST ?= dist/$(TARGET)
DEVICE ?=
FORCE ?=
# Extra `edgepipe deploy` options, e.g. DEPLOY_ARGS="--port 2222 --identity ~/.ssh/jetson --accept-new-host-key"
DEPLOY_ARGS ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.edgepipe-installed
TRTCHECK := $(VENV)/.trtcheck-installed

.PHONY: deploy test venv bench clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $(STAMP)

# NVIDIA's real TensorRT Python bindings (10.x and 11.x, side by side) and tensorrt-rtx: the tests
# check our TensorRT calls and graphs against them on CPU machines. Only `make test` needs them.
$(TRTCHECK): $(STAMP) tools/install_trt_check.sh
	bash tools/install_trt_check.sh $(VENV)
	@touch $(TRTCHECK)

venv: $(STAMP)

deploy: $(STAMP)
	$(BIN)/edgepipe deploy --config $(CONFIG) --target $(TARGET) --out $(OUT) --dist $(DIST) \
		$(if $(DEVICE),--device $(DEVICE)) $(if $(FORCE),--force) $(DEPLOY_ARGS)

test: $(STAMP) $(TRTCHECK)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_suite.py

clean:
	rm -rf runs dist build *.egg-info
