# Quick start: `make demo` (set up, then run the pipeline end to end on generated data, export the model
# and predict with the export) and `make test`.
PYTHON ?= python3
# The CPU build of torch; for a GPU, install your CUDA build of torch into .venv first, or set TORCH.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
DATA := data

.PHONY: setup setup-bench demo test lint clean

$(BIN)/brats: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(BIN)/brats

setup: $(BIN)/brats

# nnU-Net v2 and MONAI for bench/peers.py; torchvision pinned to the torch in .venv, so pip keeps that torch.
setup-bench: setup
	$(BIN)/python -m pip install -q -e '.[bench]' "torchvision==$$($(BIN)/python -c \
	  'import torch; print("0.%d.*" % (int(torch.__version__.split(".")[1]) + 15))')"

demo: setup
	$(BIN)/brats synth $(DATA)/raw --cases 8
	$(BIN)/brats ingest $(DATA)/raw --out $(DATA)/store
	$(BIN)/brats train --config configs/demo.toml --store $(DATA)/store --out $(DATA)/run --overwrite
	$(BIN)/brats score --ckpt $(DATA)/run/best.pt --out $(DATA)/run/final_scores.csv --figures $(DATA)/run/figures
	$(BIN)/brats export $(DATA)/run/best.pt $(DATA)/run/exported --overwrite
	$(BIN)/brats predict $(DATA)/raw $(DATA)/run/predictions --ckpt $(DATA)/run/exported --overwrite

test: setup
	$(BIN)/python -m pytest -q

# ruff (pyflakes, pycodestyle, import order, bugbear) and the import layers (tests/test_layers.py).
lint: setup
	$(BIN)/ruff check gliostream tests bench
	$(BIN)/python -m pytest -q tests/test_layers.py

clean:
	rm -rf $(DATA) $(VENV)
