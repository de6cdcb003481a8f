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
from dataclasses import dataclass

from hetc.backends.base import emulate_option, emulating
from hetc.backends.c.build import build
from hetc.backends.c.emitter import read_headers
from hetc.backends.c.library import Library
from hetc.backends.x86 import FLAGS, X86Backend, can_build, make_artifact, packed, sources, threads
from hetc.backends.x86.emit import lower_graph
from hetc.core.errors import TargetError
from hetc.core.targets import c_compiler, get_target

from .lowering import AmxEmitter

HERE = os.path.dirname(os.path.abspath(__file__))
AMX_FLAGS = ["-mamx-tile", "-mamx-int8", "-mamx-bf16"]
EMULATE_FLAGS = ["-DHETC_AMX_EMULATE"]
EMULATED_NOTE = ("amx runs through hetc's software model of the AMX instructions (emulate): "
                 "the numbers are the hardware's, the speed means nothing")
HEADER_FILES = ("amx.h", "amx_emu.h")


@dataclass(frozen=True)
class AmxOptions:
    emulate: bool | None = emulate_option()


class AmxBackend(X86Backend):
    """x86's support table and refusals; its own renderer, options, build and loading."""

    name = "amx"
    Options = AmxOptions
    emitter = AmxEmitter

    def lower(self, graph, target, options):
        lowered = lower_graph(graph, threads(), AmxEmitter)
        srcs = sources(lowered, read_headers(HERE, HEADER_FILES))
        notes = []
        if c_compiler():  # the compile check: the real intrinsics, whatever this CPU has
            build(srcs, FLAGS + AMX_FLAGS)
        else:
            notes.append("amx: no C compiler here, so the generated AMX code was not "
                         "compile-checked (set CC or install gcc)")
        emulate = emulating(options.emulate)
        artifact = make_artifact(graph, target, lowered, srcs,
                                 {"flags": FLAGS + AMX_FLAGS, "emulate": emulate,
                                  "emulate_flags": FLAGS + EMULATE_FLAGS,
                                  "entry": "hetc_create(weights) -> ctx; hetc_run(ctx, in, out)"})
        artifact.extra["notes"] = notes + ([EMULATED_NOTE] if emulate else [])
        return artifact

    def load(self, artifact):
        emulate = bool(artifact.build.get("emulate")) or emulating(None)
        if not emulate and not get_target("amx").availability().ok:
            raise TargetError("cannot run target amx here: this CPU has no AMX. Compile for "
                              "target='x86' instead, or run these same kernels through hetc's "
                              "software AMX model with emulate=True (or HETC_EMULATE=1)")
        can_build("amx")
        lowered, srcs = packed(artifact, AmxEmitter, HEADER_FILES, HERE)
        path = build(srcs, FLAGS + (EMULATE_FLAGS if emulate else AMX_FLAGS))
        return Library(artifact.graph, lowered, path, "amx (emulated)" if emulate else "amx")


BACKEND = AmxBackend()
