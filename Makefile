# dm — quick start: `make demo` (main job on the shipped real data), `make test` (every test).
# Both create the virtual environment and build the Cython extensions themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dm-installed
PYTEST_ARGS ?=

.PHONY: all venv build demo test faults bench soak stress clean profile

all: build

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

build: $(STAMP)
	$(PY) setup.py -q build_ext --inplace -j 2

demo: build
	$(PY) -m dm supervise -c conf/demo.toml

test: build
	$(PY) -m pytest -q -m "not slow and not faults" $(PYTEST_ARGS)

faults: build
	$(PY) -m pytest -q -m faults $(PYTEST_ARGS)

bench: build
	$(PY) bench/run.py

profile: build
	$(PY) bench/profile_worker.py

soak: build
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

clean:
	rm -rf build var *.egg-info
	find dm \( -name "*.so" -o -name "_*.c" -o -name "_*.html" \) -delete
