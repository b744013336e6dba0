# Two entry points: `make demo` (the main job) and `make test` (the whole suite, run under
# each Keras backend: TensorFlow, JAX, PyTorch). Both create .venv on first use and
# reinstall only when pyproject.toml changes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint bench shortcut clean browser tensorboard matrix docs docs-serve

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,docs,reference,tensorflow,jax,torch,wandb,mlflow]"
	$(BIN)/python -m pip install --quiet --no-deps grad-cam==1.5.7
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

# TensorBoard from the project's venv (not on the PATH after `make demo`), every image step.
LOGDIR ?= runs
tensorboard: $(VENV)/.installed
	$(BIN)/tensorboard --logdir $(LOGDIR) --samples_per_plugin images=1000

lint: $(VENV)/.installed
	$(BIN)/ruff format --check keras_cam tests examples benchmarks docs/hooks
	$(BIN)/ruff check keras_cam tests examples benchmarks docs/hooks

# The documentation site (mkdocs.yml, sources in docs/) built into site/; --strict fails on
# broken links, missing API objects and unresolved references. The Methods page imports
# keras_cam.methods (the registry), hence PYTHONPATH and the quiet TensorFlow.
docs: $(VENV)/.installed
	PYTHONPATH=$(CURDIR) NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

docs-serve: $(VENV)/.installed
	PYTHONPATH=$(CURDIR) NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

# The browser test (tests/test_browser.py) drives Debian's Chromium through its driver.
# Installed with apt only when missing (CI runs as root; elsewhere through sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi

# The slow tests (real servers, examples, cross-backend parity) run once, under TensorFlow.
# Two pytest workers (pytest-xdist) keep both cores busy while a test waits on a subprocess,
# a server or a download.
PYTEST := $(BIN)/python -m pytest -n 2 --dist worksteal
test: lint browser docs
	KERAS_BACKEND=tensorflow $(PYTEST)
	KERAS_BACKEND=jax $(PYTEST) -m "not slow"
	KERAS_BACKEND=torch $(PYTEST) -m "not slow"

# The whole compatibility matrix, the heaviest one-epoch fits included (about 15 minutes).
matrix: $(VENV)/.installed
	KERAS_CAM_FULL_MATRIX=1 KERAS_BACKEND=tensorflow $(BIN)/python -m pytest tests/test_real_models.py

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_cam.py

# The fine-tuning diagnostics story and its TensorBoard screenshots (Chromium and its driver: `make browser`).
shortcut: $(VENV)/.installed browser
	$(BIN)/python examples/shortcut_learning.py --log-dir runs/shortcut
	$(BIN)/python examples/tensorboard_screenshot.py runs/shortcut docs/shortcut_tensorboard.png \
		--image cam/gradcam/timeline docs/shortcut_timeline.png

clean:
	rm -rf $(VENV) runs .pytest_cache site dist build
