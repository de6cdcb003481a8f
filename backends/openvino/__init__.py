"""The npu backend: an OpenVINO model (.xml/.bin) built from the hetc IR with
OpenVINO's opset API, static shapes throughout, compressed weights kept
packed, run by OpenVINO on an Intel NPU, or on its CPU plugin as a stand-in
when no NPU is present (as on a machine without one; said so when it runs).
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from hetc.errors import TargetError, UsageError
from hetc.runtime.artifact import Artifact
from hetc.runtime.executors import register_executor

XML, BIN = "model.xml", "model.bin"
DEVICES = ("NPU", "CPU")
LOWER_OPTIONS = ("device",)  # compile(..., device=...) applies to this backend
STANDIN_NOTE = ("npu: OpenVINO lists no NPU here; the model runs on OpenVINO's CPU plugin "
                "as a stand-in (f32 inference precision), for checking, not for speed")


def openvino():
    try:
        import openvino as ov
    except ImportError:
        raise TargetError("target npu needs OpenVINO: pip install 'hetc[openvino]'") from None
    return ov


def serialize(model) -> tuple[str, bytes]:
    """The .xml text and .bin bytes OpenVINO writes for `model`, weights as built
    (4-bit codes stay packed; float weights keep the IR's dtype)."""
    ov = openvino()
    with tempfile.TemporaryDirectory(prefix="hetc-ov-") as tmp:
        path = os.path.join(tmp, XML)
        ov.save_model(model, path, compress_to_fp16=False)
        with open(path) as f:
            xml = f.read()
        with open(os.path.join(tmp, BIN), "rb") as f:
            return xml, f.read()


def check_device(device):
    if device is not None and device not in DEVICES:
        raise UsageError(f"device must be one of {', '.join(DEVICES)} (or None: the NPU when "
                         f"OpenVINO lists one, else the CPU plugin), got {device!r}")


def lower(graph, target, device=None) -> Artifact:
    from .lowering import to_model

    check_device(device)
    openvino()
    xml, weights = serialize(to_model(graph))
    artifact = Artifact(target.name, graph, {XML: xml, BIN: weights},
                        build={"runtime": "openvino", "device": device,
                               "entry": f"{XML} + {BIN} (openvino.Core().read_model)"},
                        extra={"weights_bytes": len(weights)})
    avail = target.availability()
    if not avail.ok and device != "NPU":
        artifact.extra["notes"] = [STANDIN_NOTE]
    return artifact


_told = set()


def choose_device(core, device):
    """(device, config): the NPU when asked or listed, else the CPU plugin set
    to compute what the IR says: f32 (its default on this kind of CPU is bf16)
    and no int8 quantization of its own of the activations that meet
    compressed weights (it does that by default)."""
    if device is None:
        device = "NPU" if "NPU" in core.available_devices else "CPU"
        if device == "CPU" and "standin" not in _told:
            _told.add("standin")
            print(f"hetc: {STANDIN_NOTE}", file=sys.stderr)
    config = ({"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
              if device == "CPU" else {})
    return device, config


def compile_model(core, model, device):
    device, config = choose_device(core, device)
    try:
        return core.compile_model(model, device, config)
    except RuntimeError as e:
        reason = " ".join(str(e).split())
        raise TargetError(f"OpenVINO cannot compile this model for {device} here: "
                          f"{reason[:600]}") from None


class Runner:
    """A compiled OpenVINO model: one infer request, reused."""

    def __init__(self, artifact):
        ov = openvino()
        self.core = ov.Core()
        model = self.core.read_model(
            model=artifact.sources[XML],
            weights=ov.Tensor(np.frombuffer(artifact.sources[BIN], np.uint8).copy()))
        self.compiled = compile_model(self.core, model, artifact.build.get("device"))
        self.request = self.compiled.create_infer_request()
        self.out_types = [v.type.dtype.storage for v in artifact.graph.outputs]

    def __call__(self, arrays):
        self.request.infer([np.ascontiguousarray(a) for a in arrays], share_inputs=False)
        return [np.asarray(self.request.get_output_tensor(i).data).astype(dt, copy=True)
                for i, dt in enumerate(self.out_types)]


@register_executor("npu")
def _npu(artifact):
    return Runner(artifact)
