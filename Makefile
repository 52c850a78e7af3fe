# make train [ARGS="task=... data=..."]   make test [ARGS="-k ..."]   make lint   make test-slow   make test-slurm
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup train eval lint test test-slow test-slurm test-all clean-logs

# The environment, built once: torch from the wheels on this disk, then the project (editable).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

eval: $(STAMP)
	$(PY) eval.py $(ARGS)

# Style: ruff's lint rules and its formatter, at the line length pyproject.toml declares.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The default suite: lint, then every test not marked slow or slurm.
test: lint
	$(PY) -m pytest $(ARGS)

# End-to-end runs (minutes). pytest exits 5 when a marker selects nothing; that is not a failure.
test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(ARGS) || [ $$? -eq 5 ]

# Tests on a real local SLURM cluster: installs slurm-wlm + munge (apt) if missing.
test-slurm: $(STAMP)
	bash slurm/install_local_cluster.sh
	$(PY) -m pytest -m slurm $(ARGS) || [ $$? -eq 5 ]

test-all: test test-slow test-slurm

clean-logs:
	rm -rf logs
