# make train [ARGS="task=... data=..."]   make test [ARGS="-k ..."]   make lint   make test-slow   make test-slurm
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup train eval lint test test-slow test-slurm test-all clean-logs mediapipe-models

# MediaPipe's published models (face detector, face mesh, selfie segmenter) come in its wheel: pip fetches
# it once into data/mediapipe/ (tests and CI read it there), the import turns it into checkpoints. Nothing
# downloads at run time, and no weights are committed (data/ is ignored).
MEDIAPIPE_VERSION := 0.10.14
MEDIAPIPE_DIR := data/mediapipe
MEDIAPIPE_WHEEL_STAMP := $(MEDIAPIPE_DIR)/wheel-$(MEDIAPIPE_VERSION).stamp
FACEMESH_MEDIAPIPE_CKPT := $(MEDIAPIPE_DIR)/facemesh_mediapipe.ckpt
SELFIE_SEGMENTER := $(MEDIAPIPE_DIR)/selfie_segmenter.pt

# The environment, built once: torch from the wheels on this disk, then the project (editable).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP) mediapipe-models
	$(PY) train.py $(ARGS)

$(MEDIAPIPE_WHEEL_STAMP):
	mkdir -p $(MEDIAPIPE_DIR)
	$(PY) -m pip download -q --no-deps mediapipe==$(MEDIAPIPE_VERSION) -d $(MEDIAPIPE_DIR)
	touch $@

$(FACEMESH_MEDIAPIPE_CKPT): $(MEDIAPIPE_WHEEL_STAMP) tasks/facemesh/import_mediapipe.py tasks/facemesh/mediapipe_nets.py | $(STAMP)
	$(PY) -m tasks.facemesh.import_mediapipe $(MEDIAPIPE_DIR)/mediapipe-$(MEDIAPIPE_VERSION)-*.whl --out $@ \
		--topology-out $(MEDIAPIPE_DIR)/face_topology.json

# The person segmenter's weights (predict.py task=people_depth masks people with it when given only a video).
$(SELFIE_SEGMENTER): $(MEDIAPIPE_WHEEL_STAMP) tasks/people_depth/import_segmenter.py tasks/people_depth/segmenter.py | $(STAMP)
	$(PY) -m tasks.people_depth.import_segmenter $(MEDIAPIPE_DIR)/mediapipe-$(MEDIAPIPE_VERSION)-*.whl --out $@

# The face detector + face mesh as a FaceMeshTask checkpoint (tasks.facemesh.run, Photobooth --detector).
mediapipe-models: $(FACEMESH_MEDIAPIPE_CKPT) $(SELFIE_SEGMENTER)

eval: $(STAMP) mediapipe-models
	$(PY) eval.py $(ARGS)

# Style: ruff's lint rules and its formatter, at the line length pyproject.toml declares.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The default suite: lint, the published models (fetched by pip once), then every test not marked slow or slurm.
test: lint mediapipe-models
	$(PY) -m pytest $(ARGS)

# End-to-end runs (minutes). pytest exits 5 when a marker selects nothing; that is not a failure.
test-slow: $(STAMP) mediapipe-models
	$(PY) -m pytest -m slow $(ARGS) || [ $$? -eq 5 ]

# Tests on a real local SLURM cluster: installs slurm-wlm + munge (apt) if missing.
test-slurm: $(STAMP)
	bash slurm/install_local_cluster.sh
	$(PY) -m pytest -m slurm $(ARGS) || [ $$? -eq 5 ]

test-all: test test-slow test-slurm

clean-logs:
	rm -rf logs
