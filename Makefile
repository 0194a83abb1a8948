# `make demo` and `make test` are the README's quick start; both create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/demo
# test modules run in parallel, one module per worker (their fixtures stay in one process); 2 is CI's core count
TEST_WORKERS ?= 2

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): setup.cfg constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[all,ray,test]'
	# onnx2tf pins old releases of everything (TensorFlow 2.19, numpy 1.26 ...): installed without its pins, it works on this stack
	$(BIN)/pip install --quiet --no-deps onnx2tf==1.29.24 tf-keras==2.21.0
	# keras-hub requires tensorflow-text, which brings the full tensorflow wheel beside tensorflow-cpu (twice the disk);
	# deploycmp feeds KerasHub models token ids, not texts, so it runs without it; its other requirements are in the stack
	$(BIN)/pip install --quiet --no-deps keras-hub==0.32.0
	touch $(STAMP)

# bf16 where the CPU computes it (AVX512-BF16 or AMX): OpenVINO runs it there (its rows say so); elsewhere it is no path
DEMO_QUANTIZE := $(shell grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && echo none,bf16,int8 || echo none,int8)

demo: install
	$(BIN)/deploycmp run --model resnet18 --formats torchscript,torch-export,onnx,openvino,tflite,executorch --quantize $(DEMO_QUANTIZE) \
		--target server-cpu,mobile-cpu --format md,csv,json,html --out $(RUN_DIR) --force

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: install
	$(BIN)/python benchmarks/harness_overhead.py
	$(BIN)/python benchmarks/onnx_int8_recipes.py
	$(BIN)/python benchmarks/onnx_int8_vs_bare.py

clean:
	rm -rf $(VENV) runs
