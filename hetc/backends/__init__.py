"""Backends: one per target family, each a `Backend` (base.py). This is the
one registry: a target names its backend (`Target.backend`), and everything
that needs one (compile, load, the CLI's flags) finds it here. The built-in
backends are imported on first use, since what they need may be heavy;
`register` adds others."""

from __future__ import annotations

import importlib

from hetc.core.errors import TargetError

from .base import Backend

#: backend name -> the module whose BACKEND it is
BUILTIN = {"ref": "hetc.backends.ref", "x86": "hetc.backends.x86", "amx": "hetc.backends.amx",
           "openvino": "hetc.backends.openvino"}
_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend, *targets):
    """Make `backend` (and the Targets it serves, with backend=its name) known."""
    from hetc.core.targets import register_target

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
