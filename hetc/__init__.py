"""hetc: a model compiler with hardware-aware per-layer sparsity and precision.

    module = hetc.compile(model, target="ref", example_inputs=(x,))
    y = module(x)
"""

from hetc.core.errors import HetcError
from hetc.core.targets import TARGETS, get_target
from hetc.core.version import __version__
from hetc.driver.api import compile, import_model, load
from hetc.ir.interpret import interpret

__all__ = ["compile", "load", "import_model", "interpret", "HetcError", "TARGETS", "get_target",
           "__version__"]
