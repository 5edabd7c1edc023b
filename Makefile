# Two commands do all the set-up: `make run` and `make test`.
# Each creates .venv if missing, installs the project with pip, then runs.
#
# torch comes first and from pip on purpose: on the development and CI machines a CPU build of
# torch 2.13.0 lies on disk and pip takes it; on a GPU machine the same line installs PyPI's
# CUDA build. Override with `make run TORCH='torch==2.13.0 --index-url …'` if you need another.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.lexicon-installed

.PHONY: run test lint typecheck pytest install system-deps clean

run: $(STAMP)
	$(BIN)/lexicon run

test: $(STAMP) system-deps lint typecheck pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The Redis tests run a real redis-server on loopback; install it where it is missing.
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package) for the Redis tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# lint-imports checks the architecture (pyproject's [tool.importlinter]): one-way layers, the bot
# process free of torch and worker code, and no import circles.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
