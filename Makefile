# make demo   install, then run the pipeline on Keras MobileNetV2 (as far as it exists)
# make test   install, then run the tests
# make setup  create .venv and install the project with its dependencies

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= converted_models/mobilenet_v2

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/fcm extract keras:MobileNetV2 --logits -o $(DEMO_DIR)
	$(BIN)/fcm inspect $(DEMO_DIR)/dag.json --totals-only
	$(BIN)/fcm plan $(DEMO_DIR) --gpu H100 --batch 32 -o $(DEMO_DIR)/plan.json --report
	$(BIN)/fcm inspect $(DEMO_DIR) --html $(DEMO_DIR)/dag.html --plan $(DEMO_DIR)/plan.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
