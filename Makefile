# lerl-recsim: `make main` sets up and runs the main job, `make test` sets up
# and runs the tests. Both create .venv on first use (about 2 minutes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
ROOT_DIR ?= runs/main

.PHONY: setup main test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml requirements/*.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements/runtime.txt -r requirements/test.txt -c requirements/lock.txt
	$(PIP) install -q --no-deps -r requirements/no-deps.txt -c requirements/lock.txt
	$(PIP) install -q --no-deps -e .
	touch $@

main: setup
	$(PY) -m lerl_recsim.binaries.quickstart --root_dir=$(ROOT_DIR)

test: setup
	$(PY) -m pytest -q -n auto --dist loadfile --max-worker-restart=0

bench: setup
	$(PY) bench/env_speed.py

clean:
	rm -rf $(VENV) build *.egg-info
