"""The npu backend: an OpenVINO model (.xml/.bin) built from the hetc IR with
OpenVINO's opset API, static shapes throughout, compressed weights kept
packed, run by OpenVINO on an Intel NPU, or on its CPU plugin as a stand-in
when no NPU is present (as on a machine without one; said so when it runs).

openvino is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

from hetc.backends.base import Backend, option
from hetc.core.errors import TargetError
from hetc.ir.partition import split
from hetc.runtime.artifact import Artifact

from .lowering import LOWER, SUMMARY, op_problem, to_model, value_problems

DEVICES = ("NPU", "CPU")
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
        path = os.path.join(tmp, "model.xml")
        ov.save_model(model, path, compress_to_fp16=False)
        with open(path) as f:
            xml = f.read()
        with open(os.path.join(tmp, "model.bin"), "rb") as f:
            return xml, f.read()


def file_names(parts: int, k: int) -> tuple[str, str]:
    """(xml, bin) of part k: model.xml/.bin for a whole model, else part<k>.xml/.bin."""
    stem = "model" if parts == 1 else f"part{k}"
    return f"{stem}.xml", f"{stem}.bin"


@dataclass(frozen=True)
class NpuOptions:
    device: str | None = option(
        None, "the OpenVINO device to run on; default: the NPU when OpenVINO lists one, else "
              "the CPU plugin as a stand-in (said so when it runs)", DEVICES)
    parts: int = option(
        1, "split the graph into this many OpenVINO models, compiled separately and run in "
           "sequence (large models may not compile in one piece on an NPU)")


class NpuBackend(Backend):
    name = "openvino"
    Options = NpuOptions

    lowerings = LOWER  # every IR op kind

    def op_problem(self, op):
        return op_problem(op)

    def graph_problems(self, graph):
        return value_problems(graph)

    @property
    def summary(self):
        return SUMMARY

    def lower(self, graph, target, options) -> Artifact:
        openvino()
        self.check(graph, target)  # the whole graph, so errors name it (parts are not)
        device = options.device
        pieces = split(graph, options.parts)
        sources, manifest = {}, []
        for k, part in enumerate(pieces):
            xml_name, bin_name = file_names(len(pieces), k)
            sources[xml_name], sources[bin_name] = serialize(to_model(part.graph))
            manifest.append({"xml": xml_name, "bin": bin_name, "inputs": part.inputs,
                             "outputs": part.outputs})
        weights = sum(len(sources[m["bin"]]) for m in manifest)
        artifact = Artifact(target.name, graph, sources,
                            build={"runtime": "openvino", "device": device,
                                   "entry": "openvino.Core().read_model(" +
                                            ", ".join(m["xml"] for m in manifest) + ")"},
                            extra={"parts": manifest, "weights_bytes": weights})
        notes = []
        if len(pieces) > 1:
            notes.append(f"npu: split into {len(pieces)} OpenVINO models run in sequence (" +
                         "; ".join(f"{m['xml']}: {len(sources[m['bin']]) / 1e6:.1f} MB of "
                                   f"weights, {len(m['inputs'])} inputs" for m in manifest) + ")")
        if not target.availability().ok and device != "NPU":
            notes.append(STANDIN_NOTE)
        artifact.extra["notes"] = notes
        return artifact

    def load(self, artifact):
        return Runner(artifact)


# The CPU plugin computing what the IR says (see choose_device).
CHECK_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
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
    return device, (CHECK_CONFIG if device == "CPU" else {})


def compile_model(core, model, device):
    device, config = choose_device(core, device)
    try:
        return core.compile_model(model, device, config)
    except RuntimeError as e:
        reason = " ".join(str(e).split())
        raise TargetError(f"OpenVINO cannot compile this model for {device} here: "
                          f"{reason[:600]}") from None


def _parts(artifact):
    """The artifact's list of OpenVINO parts, checked: each part's files are
    sources of the artifact (.xml text, .bin bytes), and each reads values
    the graph's inputs or an earlier part give (a saved folder may have been
    tampered with)."""
    parts = artifact.extra.get("parts")
    known = {v.name for v in artifact.graph.inputs}
    ok = isinstance(parts, list) and parts
    for m in parts if ok else ():
        ok = (isinstance(m, dict) and set(m) == {"xml", "bin", "inputs", "outputs"}
              and isinstance(artifact.sources.get(m["xml"]), str)
              and isinstance(artifact.sources.get(m["bin"]), bytes)
              and all(isinstance(m[k], list) and all(isinstance(n, str) for n in m[k])
                      for k in ("inputs", "outputs"))
              and set(m["inputs"]) <= known)
        if not ok:
            break
        known |= set(m["outputs"])
    if not ok or not {v.name for v in artifact.graph.outputs} <= known:
        raise TargetError("target npu: the artifact's list of OpenVINO models ('parts') is "
                          "damaged or does not fit its graph; recompile the model")
    return parts


class Runner:
    """The compiled OpenVINO model(s) of an artifact, run in sequence.

    An infer request serves one call at a time, so a call takes a set of
    requests (one per part) from a pool and puts it back, making a new set
    when all are in use: calls from several threads at once are safe."""

    def __init__(self, artifact):
        ov = openvino()
        self.core = ov.Core()
        self.parts = []  # (compiled model, input names, output names)
        device = artifact.build.get("device")
        if device not in (None, *DEVICES):
            raise TargetError(f"target npu: the artifact names device {str(device)[:40]!r}; "
                              f"it is damaged, recompile the model")
        for m in _parts(artifact):
            try:
                model = self.core.read_model(
                    model=artifact.sources[m["xml"]],
                    weights=ov.Tensor(np.frombuffer(artifact.sources[m["bin"]], np.uint8).copy()))
            except RuntimeError as e:
                raise TargetError(f"target npu: OpenVINO cannot read {m['xml']} with "
                                  f"{m['bin']}: {' '.join(str(e).split())[:300]}") from None
            compiled = compile_model(self.core, model, device)
            self.parts.append((compiled, m["inputs"], m["outputs"]))
        self.free = [self._requests()]  # pop and append are atomic under the GIL
        self.inputs = [v.name for v in artifact.graph.inputs]
        self.outputs = [(v.name, v.type.shape, v.type.dtype.storage)
                        for v in artifact.graph.outputs]

    def _requests(self):
        return [compiled.create_infer_request() for compiled, _, _ in self.parts]

    def __call__(self, arrays):
        try:
            requests = self.free.pop()
        except IndexError:  # every set is in use by another thread
            requests = self._requests()
        try:
            env = dict(zip(self.inputs, arrays))
            for request, (_, inputs, outputs) in zip(requests, self.parts):
                # np.require keeps 0-d arrays 0-d (ascontiguousarray would not)
                request.infer([np.require(env[n], requirements="C") for n in inputs],
                              share_inputs=False)
                for i, name in enumerate(outputs):
                    env[name] = np.array(request.get_output_tensor(i).data, copy=True)
            # copies: an output may be an input (or repeated), as on the other targets
            return [np.array(env[name], dt).reshape(shape) for name, shape, dt in self.outputs]
        except (RuntimeError, ValueError, IndexError) as e:  # a model that does not fit its IR
            raise TargetError(f"target npu: OpenVINO failed running the model: "
                              f"{' '.join(str(e).split())[:300]}") from None
        finally:
            self.free.append(requests)


BACKEND = NpuBackend()
