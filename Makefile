# The two commands a newcomer needs: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: run test install bench soak clean lint check

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e .
	touch $@

$(TSTAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[test]'
	touch $@ $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m receiver.devrun

test: $(TSTAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(TSTAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

soak: $(TSTAMP)
	$(PY) -m bench.soak $(SOAK_ARGS)

check: $(TSTAMP)
	$(VENV)/bin/flask --app app db check

clean:
	rm -rf $(VENV) instance .pytest_cache
