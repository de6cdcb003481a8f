# Every target that runs Python goes through `venv`, which creates or reuses
# .venv and reinstalls only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test conformance clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]' torch==2.13.0
	touch $(STAMP)

demo: venv
	$(PY) examples/demo.py

test: venv
	$(PY) -m pytest -q -n 2 tests

# Regenerates the published ONNX node-test table (docs/onnx-conformance.md).
conformance: venv
	$(VENV)/bin/hetc conformance onnx --markdown docs/onnx-conformance.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
