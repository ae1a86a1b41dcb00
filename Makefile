# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# pip's and setuptools' notices go to .venv/install.log; it is printed if the install fails
	$(BIN)/python -m pip install --quiet --upgrade pip > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" >> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	$(BIN)/python -m pip install --quiet -e ".[test,bench,eval]" >> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	touch $(STAMP)

install: $(STAMP)

# The embedded default: reproduce OLMo 2 7B's mid-training at tiny scale as a DVC experiment (`dvc exp show` lists it).
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/midtrain reproduce olmo-2-1124-7b

test: $(STAMP)
	@# The HTML catalogue is tested in Debian's headless Chromium; install it when we may (root).
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } \
		|| echo "note: chromium is not installed; the browser tests will be skipped"
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/data_throughput.py
	$(BIN)/python benchmarks/trainer_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
