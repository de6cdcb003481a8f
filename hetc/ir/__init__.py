"""The hetc IR: types, graphs, the op table, text form and verifier."""

from . import dtypes
from .dtypes import DType
from .graph import Graph, Op, Value
from .ops import OPS, get_op
from .parser import parse, parse_file, save
from .printer import print_graph
from .types import NM, Quant, TensorType
from .verify import verify
from .weights import WeightStore, aux_key

__all__ = ["dtypes", "DType", "Graph", "Op", "Value", "OPS", "get_op", "parse", "parse_file",
           "save", "print_graph", "NM", "Quant", "TensorType", "verify", "WeightStore", "aux_key"]
