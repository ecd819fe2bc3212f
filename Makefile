# Everything builds its own virtual environment from nothing: `make demo`, `make test`.
# Installs come from the lock files in requirements/ (hashes checked); `make lock` re-resolves
# them, `make test-latest` tries the newest versions pyproject.toml allows, without the lock.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
RUN    := .run
PORT   ?= 8000

.PHONY: venv test test-embedded test-latest lock lint browser demo stop bench bench-quality \
	bench-peers bench-ingest ingest soak clean

$(STAMP): requirements/dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	sh scripts/install_locked.sh $(VENV) requirements/dev.txt
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

browser:
	@sh scripts/install_browser.sh

# The whole suite against the redis-server on PATH (else the embedded one), then the suites
# that talk to Redis most against the embedded Valkey, so both servers are checked every run.
test: lint browser
	$(BIN)/pytest -q
	$(MAKE) test-embedded

test-embedded: $(STAMP)
	CTR_TEST_REDIS=embedded $(BIN)/pytest -q tests/test_ingest.py tests/test_cluster.py \
		tests/test_faults.py tests/test_redis_versions.py

# Re-resolve requirements/*.txt from pyproject.toml: after changing a dependency range, or to
# take new releases on purpose. Commit the result with the change that needed it.
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q pip-tools==7.7.0
	sh scripts/lock.sh .venv-lock/bin/pip-compile

# The newest versions the ranges allow, no lock: finds a breaking release before a user does.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install -q --upgrade pip
	.venv-latest/bin/pip install -q -e '.[export,serve,spark,dev]'
	.venv-latest/bin/pip freeze --exclude-editable > .venv-latest/versions.txt
	PATH=$(CURDIR)/.venv-latest/bin:$$PATH .venv-latest/bin/pytest -q \
		--deselect tests/test_lock.py::test_this_environment_runs_the_dev_lock

demo: $(STAMP)
	$(BIN)/python -m scripts.demo --port $(PORT)

stop: $(STAMP)
	$(BIN)/python -m scripts.demo --stop

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quality: $(STAMP)
	$(BIN)/python -m bench.quality

$(BENCH_STAMP): $(STAMP) requirements/bench.txt
	sh scripts/install_locked.sh $(VENV) requirements/bench.txt
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
	rm -rf $(VENV) .venv-lock .venv-latest $(RUN) artifacts bench/results .pytest_cache .ruff_cache
