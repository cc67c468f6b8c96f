# mmserve: `make demo` and `make test` do all set-up themselves (idempotently).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt
STAMPS := $(VENV)/.stamps
CPP_SOURCES := $(shell find csrc -type f) CMakeLists.txt pyproject.toml

.PHONY: setup demo test lint bench benchmarks soak fuzz train-model train-audio towers clean distclean help

help:
	@echo "make demo         set up, export the default model, run the end-to-end demo"
	@echo "make test         set up, lint, and run the test suite"
	@echo "make lint         ruff and mypy on the package (part of make test)"
	@echo "make bench        run the component benchmarks in bench/ (runtimes, preprocessing, tokenizer, search)"
	@echo "make benchmarks   regenerate BENCHMARKS.md: load tests against the baselines (about 15 min)"
	@echo "make soak         10 minutes of mixed load with 1% bad inputs: memory growth per process, errors"
	@echo "make fuzz         fuzz the image decoders for FUZZ_SECONDS (default 600)"
	@echo "make train-model  retrain the bundled default model (about 80 min on 2 cores)"
	@echo "make train-audio  retrain its audio tower into its frozen space (about 10 min on 2 cores)"
	@echo "make clean        remove build outputs (keeps .venv)"

setup: $(STAMPS)/install

$(STAMPS)/system: scripts/ensure-system-deps.sh
	@bash scripts/ensure-system-deps.sh "$(PYTHON)"
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/deps: $(STAMPS)/system constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@mkdir -p $(STAMPS)
	# torch: the CPU build pinned in constraints.txt (training and export only).
	$(PIP_INSTALL) scikit-build-core pybind11 cmake ninja \
	    numpy pillow regex pydantic pydantic-settings tqdm onnxruntime openvino \
	    torch transformers safetensors tokenizers sentencepiece onnx onnxscript ftfy pytest hypothesis \
	    "tritonclient[grpc,http]" usearch typer rich \
	    fastapi uvicorn uvloop httptools orjson prometheus-client openai selenium av soundfile soxr \
	    pymilvus milvus-lite pyarrow kubernetes-validate contourpy cycler fonttools kiwisolver pyparsing python-dateutil ruff mypy
	# open_clip (and timm, for its SigLIP entries) are references in the parity tests; their declared deps would
	# pull a CUDA torch and torchvision (which has no CPU build for this torch: see mmserve/dev/checkpoints.py).
	# scikit-image, scikit-learn: their sample photos feed the image parity tests (matplotlib's too; its
	# plotting dependencies are installed above, for the load-test plots).
	$(PIP_INSTALL) --no-deps open_clip_torch timm matplotlib scikit-image scikit-learn
	# nvidia-pytriton: only its tritonserver binary is used (its Python API's deps are not needed).
	$(PIP_INSTALL) --no-deps nvidia-pytriton
	@touch $@

$(STAMPS)/install: $(STAMPS)/deps $(CPP_SOURCES)
	$(PIP_INSTALL) --no-build-isolation --no-deps -e .
	@touch $@

# ONNX export of the model's towers (skipped when the cache already holds this model's export).
towers: setup
	$(VENV)/bin/mmserve export

demo: towers
	$(VENV)/bin/mmserve demo

# Lint the package (the serving path and its tools); about 40 s cold, a few seconds with mypy's cache.
lint: setup
	$(VENV)/bin/ruff check mmserve
	$(VENV)/bin/mypy

test: lint
	@set +e; $(VENV)/bin/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: towers
	$(PY) bench/bench_runtimes.py --vit-b32
	$(PY) bench/bench_preprocess.py
	$(PY) bench/bench_tokenizer.py
	$(PY) bench/bench_search.py

benchmarks: towers
	$(PY) bench/run_benchmarks.py

SOAK_SECONDS ?= 600
soak: towers
	$(PY) bench/soak.py --seconds $(SOAK_SECONDS) --json bench/results/soak.json

# Fuzz the image decoders (FUZZ_SECONDS, default 600) with atheris.
FUZZ_SECONDS ?= 600
fuzz: setup
	$(PIP_INSTALL) atheris
	$(PY) tests/fuzz/fuzz_decode.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 build/fuzz-corpus

train-model: setup
	$(PY) -m mmserve.dev.training --out mmserve/models/default

# Retrain the bundled audio tower into the (frozen) bundled model's space (about 10 min on 2 idle cores).
train-audio: setup
	rm -rf mmserve/models/default/audio
	$(PY) -m mmserve.dev.audio_training --out mmserve/models/default/audio

clean:
	rm -rf build .pytest_cache

distclean: clean
	rm -rf $(VENV)
