# make demo   install, build the library, convert Keras MobileNetV2, verify it, run it
# make test   install, build the library, run the tests
# make zoo    convert and verify the six reference models (results in converted_models/)
# make setup  create .venv, install the project with its dependencies, build the custom-op library

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LIB    := ort_custom_ops/lib/libfcm_ort_ops.so
HEADER := ort_custom_ops/csrc/vocabulary.h
DEMO   := converted_models/mobilenet_v2

.PHONY: setup test demo zoo clean

setup: $(STAMP) $(LIB)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(LIB): $(STAMP) ort_custom_ops/CMakeLists.txt $(HEADER) $(wildcard ort_custom_ops/csrc/*.h ort_custom_ops/csrc/*.cc ort_custom_ops/csrc/cuda/*)
	$(BIN)/python -m ort_custom_ops.ops.build

# the op vocabulary's C++ header, generated from fcm_core/vocabulary.py (checked in; a test compares them)
$(HEADER): fcm_core/vocabulary.py ort_custom_ops/ops/header.py | $(STAMP)
	$(BIN)/python -m ort_custom_ops.ops.header

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/fcm convert keras:MobileNetV2 --logits --batch 32 -o $(DEMO)/mobilenet_v2.onnx
	$(BIN)/fcm verify $(DEMO)/mobilenet_v2.onnx --batch 4
	$(BIN)/fcm inspect $(DEMO)/mobilenet_v2.dag.json --html $(DEMO)/mobilenet_v2.html --plan $(DEMO)/mobilenet_v2.plan.json
	@echo "files: $(DEMO)/ (mobilenet_v2.onnx, .unfused.onnx, .dag.json, .plan.json, .report.md, .html)"

zoo: setup
	$(BIN)/python -m fcm.zoo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache ort_custom_ops/lib
