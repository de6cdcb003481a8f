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

# Regenerates the published ONNX tables (docs/onnx-conformance.md, docs/onnx-models.md).
conformance: venv
	$(VENV)/bin/hetc conformance onnx --markdown docs/onnx-conformance.md
	$(VENV)/bin/hetc conformance onnx-models --markdown docs/onnx-models.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
