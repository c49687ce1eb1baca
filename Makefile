# devbox: `make install` then `make test` is the whole set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Under CI a missing Docker Engine is a failure. CI is 1, true or yes in any case, as in
# tests/conftest.py (in_ci), which tests/test_ci_gate.py checks against this line.
IN_CI := $(filter 1 true yes,$(shell printf '%s' "$$CI" | tr '[:upper:]' '[:lower:]'))

.PHONY: install docker images test test-fast test-engines lint mutants bench bench-proxy bench-devbox clean

install: $(BIN)/devbox

$(BIN)/devbox: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# A running Docker Engine; on a bare machine (root, apt) this installs and starts one.
docker:
	bash scripts/ensure-docker.sh

images: install docker
	bash images/build.sh

# Without a Docker Engine (and not under CI) the suite still runs: the Docker-backed
# tests skip with the reason. Under CI (IN_CI above) a missing engine is a failure.
test: install
	@if bash scripts/ensure-docker.sh; then bash images/build.sh; \
	elif [ -n "$(IN_CI)" ]; then exit 1; \
	else echo "make test: no Docker Engine here; the Docker-backed tests will be skipped"; fi
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m 'not docker'

# The isolation and walkthrough tests again, against the newest docker.io Debian has (unstable),
# nested in a container of the running engine (scripts/nested-engine.sh). Needs `make images`.
test-engines: install docker
	bash scripts/nested-engine.sh test

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Mutation testing of the security core (config: [tool.mutmut] in pyproject.toml). Slow and
# never part of `make test`; one child process. Narrow it with e.g. MUTANTS='proxy.paths*'.
MUTANTS ?= proxy.redact* proxy.paths* proxy.policy* proxy.hosts* devbox_cli.store.sealing* \
	proxy.swap* proxy.gateway.x_check_binding* proxy.gateway.x__split_target*
mutants: install
	$(BIN)/pip install -q -e '.[dev,mutation]'
	$(BIN)/mutmut run --max-children 1 $(foreach m,$(MUTANTS),'$(m)')
	$(BIN)/mutmut results

bench: bench-proxy bench-devbox

bench-proxy: install
	$(BIN)/python bench/bench_proxy.py --write

bench-devbox: install images
	$(BIN)/python bench/bench_devbox.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache mutants
