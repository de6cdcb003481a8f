"""The amx backend: the x86 backend's generated C with linear layers on Intel
AMX tiles (amx.h), built with the AMX flags.

This host may lack AMX. Every compile builds the native library (so the AMX
source is always checked by the real compiler with -mamx-tile -mamx-int8
-mamx-bf16); running needs an AMX CPU, or emulation: the same source built
with HETC_AMX_EMULATE runs the tile instructions through hetc's software
model (amx_emu.h). emulate=True at compile time or HETC_EMULATE=1 at run
time chooses it.
"""

from __future__ import annotations

import os

from hetc.backends.c.emitter import read_headers
from hetc.backends.x86 import Library, make_artifact, packed, sources, threads
from hetc.backends.x86.emit import lower_graph
from hetc.errors import TargetError
from hetc.runtime.executors import register_executor

from .lowering import AmxEmitter

HERE = os.path.dirname(os.path.abspath(__file__))
AMX_FLAGS = ["-mamx-tile", "-mamx-int8", "-mamx-bf16"]
EMULATE_FLAGS = ["-DHETC_AMX_EMULATE"]
LOWER_OPTIONS = ("emulate",)  # compile(..., emulate=...) applies to this backend
EMULATED_NOTE = ("amx runs through hetc's software model of the AMX instructions (emulate): "
                 "the numbers are the hardware's, the speed means nothing")


def env_emulate() -> bool:
    return os.environ.get("HETC_EMULATE", "") not in ("", "0")


HEADER_FILES = ("amx.h", "amx_emu.h")



def lower(graph, target, emulate=None):
    from hetc.backends.x86.build import FLAGS, build
    from hetc.targets import c_compiler

    lowered = lower_graph(graph, threads(), AmxEmitter)
    srcs = sources(lowered, read_headers(HERE, HEADER_FILES))
    notes = []
    if c_compiler():  # the compile check: the real intrinsics, whatever this CPU has
        build(srcs, AMX_FLAGS)
    else:
        notes.append("amx: no C compiler here, so the generated AMX code was not "
                     "compile-checked (set CC or install gcc)")
    emulate = env_emulate() if emulate is None else bool(emulate)
    artifact = make_artifact(graph, target, lowered, srcs,
                             {"flags": FLAGS + AMX_FLAGS, "emulate": emulate,
                              "emulate_flags": FLAGS + EMULATE_FLAGS,
                              "entry": "hetc_create(weights) -> ctx; hetc_run(ctx, in, out)"})
    artifact.extra["notes"] = notes + ([EMULATED_NOTE] if emulate else [])
    return artifact


@register_executor("amx")
def _amx(artifact):
    from hetc.backends.x86.build import build
    from hetc.targets import get_target

    emulate = bool(artifact.build.get("emulate")) or env_emulate()
    if not emulate and not get_target("amx").availability().ok:
        raise TargetError("cannot run target amx here: this CPU has no AMX. Compile for "
                          "target='x86' instead, or run these same kernels through hetc's "
                          "software AMX model with emulate=True (or HETC_EMULATE=1)")
    x86 = get_target("x86").availability()
    if not x86.ok:
        raise TargetError(f"cannot build target amx on this host: {x86.detail}")
    lowered, srcs = packed(artifact, AmxEmitter, HEADER_FILES, HERE)
    path = build(srcs, EMULATE_FLAGS if emulate else AMX_FLAGS)
    return Library(artifact.graph, lowered, path, "amx (emulated)" if emulate else "amx")
