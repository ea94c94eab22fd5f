# make demo         install, build the library, convert Keras MobileNetV2, verify it, run it (outputs in out/demo/)
# make test         install, build the library, run the tests
# make zoo          convert and verify the six reference models (results in converted_models/)
# make setup        create .venv, install the project with its dependencies, build the custom-op library
# make setup GPU=1  the same with onnxruntime-gpu in place of onnxruntime (a machine with an NVIDIA GPU); kept
#                   by later calls until `make setup GPU=`

PYTHON ?= python3
comma  := ,
VENV   := .venv
BIN    := $(VENV)/bin
# GPU=1 once: later calls keep the GPU build (GPU= goes back to the CPU one)
GPU    ?= $(if $(wildcard $(VENV)/.installed-gpu),1)
# onnxruntime and onnxruntime-gpu install the same Python package: the venv holds one of them
ORT    := $(if $(GPU),onnxruntime-gpu,onnxruntime)
OTHER  := $(if $(GPU),onnxruntime,onnxruntime-gpu)
STAMP  := $(VENV)/.installed$(if $(GPU),-gpu)
LIB    := ort_custom_ops/lib/libfcm_ort_ops.so
HEADER := ort_custom_ops/csrc/vocabulary.h
DEMO   := out/demo

.PHONY: setup test demo zoo clean

setup: $(STAMP) $(LIB)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev$(if $(GPU),$(comma)gpu)]'
	@# where the other build is installed too, remove it, then reinstall this one's files over what it removed
	if $(BIN)/python -m pip show --quiet $(OTHER) 2>/dev/null; then \
	  $(BIN)/python -m pip uninstall --quiet -y $(OTHER) && \
	  $(BIN)/python -m pip install --quiet --force-reinstall --no-deps \
	    "$(ORT)==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("$(ORT)"))')"; \
	fi
	@rm -f $(VENV)/.installed $(VENV)/.installed-gpu
	@touch $(STAMP)

$(LIB): $(STAMP) ort_custom_ops/CMakeLists.txt $(HEADER) $(wildcard ort_custom_ops/csrc/*.h ort_custom_ops/csrc/*.cc ort_custom_ops/csrc/cuda/*)
	$(BIN)/python -m ort_custom_ops.ops.build

# the op vocabulary's C++ header, generated from fcm_core/vocabulary.py (checked in; a test compares them)
$(HEADER): fcm_core/vocabulary.py ort_custom_ops/ops/header.py | $(STAMP)
	$(BIN)/python -m ort_custom_ops.ops.header

test: setup
	$(BIN)/python -m pytest -q

# the demo writes where git ignores it (out/): a checkout stays clean
demo: setup
	$(BIN)/fcm convert keras:MobileNetV2 --logits --batch 32 -o $(DEMO)/mobilenet_v2.onnx
	$(BIN)/fcm verify $(DEMO)/mobilenet_v2.onnx --batch 4
	$(BIN)/fcm inspect $(DEMO)/mobilenet_v2.dag.json --html $(DEMO)/mobilenet_v2.html --plan $(DEMO)/mobilenet_v2.plan.json
	@echo "files: $(DEMO)/ (mobilenet_v2.onnx, .unfused.onnx, .dag.json, .weights.npz, .plan.json, .report.md, .html)"

zoo: setup
	$(BIN)/python -m fcm.zoo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache ort_custom_ops/lib
