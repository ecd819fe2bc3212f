# Everything builds its own virtual environment from nothing: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
RUN    := .run
PORT   ?= 8000

.PHONY: venv test lint browser demo stop bench bench-quality bench-peers bench-ingest ingest soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[export,serve,dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

browser:
	@sh scripts/install_browser.sh

test: lint browser
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/python -m scripts.demo --port $(PORT)

stop: $(STAMP)
	$(BIN)/python -m scripts.demo --stop

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quality: $(STAMP)
	$(BIN)/python -m bench.quality

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[export,bench]'
	touch $(BENCH_STAMP)

bench-peers: $(BENCH_STAMP)
	$(BIN)/python -m bench.peers

bench-ingest: $(STAMP)
	$(BIN)/python -m bench.ingest

ingest: $(STAMP)
	$(BIN)/ctr-ingest

soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) $(RUN) artifacts bench/results .pytest_cache .ruff_cache
