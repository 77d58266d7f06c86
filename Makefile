# Two commands on a fresh machine: `make quickstart` and `make test`.
# Everything installs into .venv; torch is pinned (see pyproject.toml) so pip takes the CPU build.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install quickstart test test-slow lint bench lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[local,dev,postgres]'
	touch $@

quickstart: install
	$(BIN)/ftsweep run sweeps/quickstart.yaml

test: install
	$(BIN)/pytest

test-slow: install
	$(BIN)/pytest -m slow

lint: install
	$(BIN)/ruff check orchestrator tests benchmarks
	$(BIN)/ruff format --check orchestrator tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

bench: install
	$(PY) benchmarks/run_all.py --quick

# Re-resolve the dependencies from pyproject.toml alone and record them in constraints.txt
# (torch's local '+cpu' label dropped, so the pin also matches the CPU wheel on disk).
lock:
	rm -rf .lock-venv
	python3 -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[local,dev,postgres]'
	{ head -2 constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable \
		| sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
