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

.PHONY: setup sctk chromium test test-fast lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=77"
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)" "$(TORCHAUDIO_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[synth,dev,flashlight,plot,tensorboard,ray,vad,onnx,sherpa,whisper,hf,report]" "$(TORCH_PIN)"
	touch $(STAMP)

# No test is skipped: a test that needs a Debian package gets it installed when it is missing and we are
# root with apt-get (as in CI); otherwise the target says why (that test then fails). -rs lists any skip.
# $(call apt_package,CHECK,PACKAGE,WHAT NEEDS IT): CHECK is a shell test that the tool is there.
define apt_package
	@$(1) || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(2) for $(3)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    { apt-get install -y -qq $(2) || { apt-get update -qq && apt-get install -y -qq $(2); }; } >/dev/null \
	      || echo "note: apt-get install $(2) failed; $(3) will fail"; \
	  else \
	    echo "note: $(2) is missing and cannot be installed here (needs root and apt-get):" \
	         "install it (Debian/Ubuntu: apt-get install $(2)) or $(3) will fail"; \
	  fi
endef

# tests/scoring/test_scoring_reports.py checks our trn files against NIST sclite (SCTK).
sctk:
	$(call apt_package,command -v sclite >/dev/null || test -x /usr/lib/sctk/bin/sclite,sctk,tests/scoring/test_scoring_reports.py)

# tests/studies/test_report.py opens the HTML report in a real headless Chromium (Playwright drives it); any Chromium
# on PATH, or the one $$ASRBENCH_CHROMIUM names, will do.
chromium:
	$(call apt_package,command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  test -n "$$ASRBENCH_CHROMIUM",chromium,tests/studies/test_report.py)

# TEST_JOBS pytest processes (pytest-xdist), each taking whole test files (--dist loadfile): a file's
# module fixtures (a Ray cluster, a trained model) stay in one process; the session's trained
# fixtures are built once per process that needs them.
TEST_JOBS ?= 2
PYTEST := ASRBENCH_NO_PROGRESS=1 $(BIN)/python -m pytest -q -rs -n $(TEST_JOBS) --dist loadfile

test: setup sctk chromium
	$(PYTEST)

# The quick unit suite: every test but those that train a model (marked slow; tests/conftest.py checks).
test-fast: setup sctk
	$(PYTEST) -m "not slow"

# mypy: configured in pyproject.toml [tool.mypy]; tests/test_lint.py holds asrbench/ at zero errors.
lint: setup
	$(BIN)/ruff check asrbench tests benchmarks tools
	$(BIN)/ruff format --check asrbench tests benchmarks tools
	$(BIN)/mypy asrbench

# The main job on the built-in corpus: synthesize, train the 7 CTC architectures (dnn ... conformer; the
# attention models are in the recipes, not in the demo), decode, compare.
demo: setup
	test -f data/synth/train.jsonl || $(BIN)/asrbench data synth --out data/synth
	for model in $(DEMO_MODELS); do \
	  test -f $(DEMO_DIR)/$$model/train_summary.json || \
	    $(BIN)/asrbench train synth --model $$model --out $(DEMO_DIR)/$$model || exit 1; \
	  $(BIN)/asrbench decode $(DEMO_DIR)/$$model --split test || exit 1; \
	done
	$(BIN)/asrbench compare $(addprefix $(DEMO_DIR)/,$(DEMO_MODELS))
	$(BIN)/asrbench compare $(addprefix $(DEMO_DIR)/,$(DEMO_MODELS)) --format markdown --out $(DEMO_DIR)/RESULTS.md --overwrite

# The benchmark suite (benchmarks/run_all.py): one table of every figure against its target,
# benchmarks/results/latest.json; <= 15 minutes on 2 CPU cores.
bench: setup
	test -f data/an4/train.jsonl || $(BIN)/asrbench data prepare an4 $(DATA_ROOT)/an4 --out data/an4
	ASRBENCH_NO_PROGRESS=1 $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs data .pytest_cache .ruff_cache .mypy_cache
