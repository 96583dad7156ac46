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

.PHONY: deploy test test-slow lint venv bench clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $(STAMP)

# NVIDIA's real TensorRT Python bindings (10.x and 11.x, side by side) and tensorrt-rtx: the tests
# check our TensorRT calls and graphs against them on CPU machines. Only the tests need them. Best
# effort: when a download fails the matching tests skip (listed at the end of the run), the stamp is
# not written, and the next `make test` tries again.
$(TRTCHECK): $(STAMP) tools/install_trt_check.sh
	@if bash tools/install_trt_check.sh $(VENV); then touch $(TRTCHECK); else \
		echo "make: some TensorRT check tools did not install (see above); their tests will be skipped"; fi

venv: $(STAMP)

deploy: $(STAMP)
	$(BIN)/edgepipe deploy --config $(CONFIG) --target $(TARGET) --out $(OUT) --dist $(DIST) \
		$(if $(DEVICE),--device $(DEVICE)) $(if $(FORCE),--force) $(DEPLOY_ARGS)

# `make test`: system programs the tests need (sshd, installed when we are root with apt-get), lint,
# then every test not marked slow (under 10 minutes on 2 cores). Skipped tests are listed last, by reason.
test: $(STAMP) $(TRTCHECK)
	@bash tools/ensure_test_deps.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Tests marked slow (each more than ~60 s: DDP, kill-and-resume). Exit code 5 (none collected) is success.
test-slow: $(STAMP) $(TRTCHECK)
	@bash tools/ensure_test_deps.sh
	@$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "make test-slow: no tests are marked slow; nothing to run"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run_suite.py

clean:
	rm -rf runs dist build *.egg-info
