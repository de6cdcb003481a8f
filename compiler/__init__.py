"""hetc: a model compiler with hardware-aware per-layer sparsity and precision.

    module = hetc.compile(model, target="ref", example_inputs=(x,))
    y = module(x)
"""

__version__ = "0.1.0"

from .api import compile, import_model, load  # noqa: E402
from .errors import HetcError  # noqa: E402
from .interpret import interpret  # noqa: E402
from .targets import TARGETS, get_target  # noqa: E402

__all__ = ["compile", "load", "import_model", "interpret", "HetcError", "TARGETS", "get_target",
           "__version__"]
