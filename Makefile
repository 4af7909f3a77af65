# Everything installs itself: `make demo` and `make test` work on a fresh machine with only Python.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; an unpinned torch resolves to a multi-GB CUDA build. GPU users: see README.
TORCH_PIN ?= torch==2.13.0
TORCHAUDIO_PIN ?= torchaudio==2.11.0
STAMP := $(VENV)/.installed

DATA_ROOT ?= $(or $(ASRBENCH_DATA_ROOT),../shared/data)
DEMO_DIR ?= runs/demo
DEMO_MODELS := dnn cnn lstm gru crdnn transformer conformer

.PHONY: setup test test-fast lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)" "$(TORCHAUDIO_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[synth,dev,flashlight,plot]" "$(TORCH_PIN)"
	touch $(STAMP)

test: setup
	ASRBENCH_NO_PROGRESS=1 $(BIN)/python -m pytest -q

test-fast: setup
	ASRBENCH_NO_PROGRESS=1 $(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check asrbench tests benchmarks

# The main job on the built-in corpus: synthesize, train the 7 CTC architectures (dnn ... conformer; the
# attention models are in the recipes, not in the demo), decode, compare.
demo: setup
	test -f data/synth/train.jsonl || $(BIN)/asrbench data synth --out data/synth
	for model in $(DEMO_MODELS); do \
	  test -f $(DEMO_DIR)/$$model/train_summary.json || \
	    $(BIN)/asrbench train recipes/synth.yaml --model $$model --out $(DEMO_DIR)/$$model || exit 1; \
	  $(BIN)/asrbench decode $(DEMO_DIR)/$$model --split test || exit 1; \
	done
	$(BIN)/asrbench compare $(addprefix $(DEMO_DIR)/,$(DEMO_MODELS))
	$(BIN)/asrbench compare $(addprefix $(DEMO_DIR)/,$(DEMO_MODELS)) --format markdown -o $(DEMO_DIR)/RESULTS.md

# The benchmark suite (benchmarks/run_all.py): one table of every figure against its target,
# benchmarks/results/latest.json; <= 15 minutes on 2 CPU cores.
bench: setup
	test -f data/an4/train.jsonl || $(BIN)/asrbench data prepare an4 $(DATA_ROOT)/an4 --out data/an4
	ASRBENCH_NO_PROGRESS=1 $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs data .pytest_cache .ruff_cache
