# Two entry points: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint bench shortcut clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

lint: $(VENV)/.installed
	$(BIN)/ruff format --check keras_cam tests examples benchmarks
	$(BIN)/ruff check keras_cam tests examples benchmarks

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_cam.py

# The fine-tuning diagnostics story and its TensorBoard screenshot (needs: apt install chromium).
shortcut: $(VENV)/.installed
	$(BIN)/python examples/shortcut_learning.py --log-dir runs/shortcut
	$(BIN)/python examples/tensorboard_screenshot.py runs/shortcut docs/shortcut_tensorboard.png \
		--image cam/gradcam/timeline docs/shortcut_timeline.png

clean:
	rm -rf $(VENV) runs .pytest_cache
