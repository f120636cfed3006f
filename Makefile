# pointworld developer entry points. Every target creates/uses the project virtualenv ($(VENV)) and
# installs what it needs: torch first and pinned (a CPU wheel on CPU-only machines; an unpinned torch
# would pull several GB of CUDA wheels), then the package in editable mode with all extras.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= sim,capture,viz,test,browser
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pointworld-installed
DEMO_OUT ?= demo_output

.PHONY: install demo test test-all bench demo-asset clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-cache-dir -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# The main job on its embedded default: a simulated push planned with the bundled world model, executed in
# closed loop; writes what it saw and predicted to $(DEMO_OUT)/.
demo: install
	$(VENV)/bin/pointworld demo output_dir=$(DEMO_OUT)

# The default test run: CPU-only, no camera, no GPU, no network.
test: install
	$(PY) -m pytest

# Everything, including tests marked slow.
test-all: install
	$(PY) -m pytest -m "not gpu and not hardware"

bench: install
	$(PY) scripts/bench_geometry.py
	$(PY) scripts/bench_fk.py
	$(PY) scripts/bench_model.py --presets tiny

# Re-render the demo recording shipped in pointworld/assets/demo_capture.
demo-asset: install
	$(PY) scripts/make_demo_capture.py --overwrite

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
