"""Backends: one per target family, each a `Backend` (base.py). This is the
one registry: a target names its backend (`Target.backend`), and everything
that needs one (compile, load, the CLI's flags) finds it here. The built-in
backends are imported on first use, since what they need may be heavy;
`register` adds others."""

from __future__ import annotations

import dataclasses
import importlib

from hetc.core.errors import TargetError, UsageError
from hetc.core.targets import TARGETS, register_target
from hetc.ir.ops import OPS

from .base import Backend

#: backend name -> the module whose BACKEND it is
BUILTIN = {"ref": "hetc.backends.ref", "x86": "hetc.backends.x86", "amx": "hetc.backends.amx",
           "openvino": "hetc.backends.openvino", "cuda": "hetc.backends.cuda",
           "fpga": "hetc.backends.fpga"}
_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend, *targets):
    """Make `backend` (and the Targets it serves, with backend=its name) known."""
    _BACKENDS[backend.name] = backend
    for t in targets:
        register_target(t)
    return backend


def backend_named(name) -> Backend:
    if name not in _BACKENDS:
        _BACKENDS[name] = importlib.import_module(BUILTIN[name]).BACKEND
    return _BACKENDS[name]


def get_backend(target) -> Backend:
    """The backend of `target`, or a clear error if it is not built."""
    if target.backend is None:
        avail = target.availability()
        raise TargetError(
            f"target '{target.name}' ({target.description}) is defined, but its backend "
            f"({target.emits}) is not built yet in this hetc; use target='ref' for now. "
            f"Host: {avail.detail}.")
    return backend_named(target.backend)


def option_fields() -> dict:
    """{option name: (field, [target names taking it])} over every registered
    backend: what `compile()` and `hetc compile` accept beyond their own."""
    out = {}
    for t in TARGETS.values():
        if t.backend is None:
            continue
        for f in dataclasses.fields(backend_named(t.backend).Options):
            out.setdefault(f.name, (f, []))[1].append(t.name)
    return out


def options_for(backend: Backend, target, given: dict):
    """`given` (compile() keywords, None for unset) as `backend`'s
    Options for `target`; UsageError for one it does not take or a value outside
    its choices."""
    fields = {f.name: f for f in dataclasses.fields(backend.Options)}
    given = {k: v for k, v in given.items() if v is not None}
    unknown = [k for k in given if k not in fields]
    if unknown:
        everywhere = option_fields()
        strange = sorted(k for k in unknown if k not in everywhere)
        if strange:
            raise UsageError(f"unknown compile option(s): {', '.join(strange)}")
        f, targets = everywhere[unknown[0]]
        raise UsageError(f"{unknown[0]}= does not apply to target '{target.name}' (it "
                         f"applies to target {', '.join(targets)}: {f.metadata['help']})")
    for key, value in given.items():
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise UsageError(f"{key} must be one of {', '.join(map(str, choices))} for "
                             f"target '{target.name}', got {value!r}")
    return backend.Options(**given)


def support_matrix() -> dict:
    """{target name: {op kind: (status, why)} or None when its backend is not
    built}: status is "lowered", "refused" or "missing" (docs/ops.md)."""
    kinds = sorted(k for k in OPS if k != "const")
    return {t.name: None if t.backend is None else
            {k: backend_named(t.backend).support(k) for k in kinds} for t in TARGETS.values()}
