"""The thin runtime: Module (call, save, load), artifacts and executors."""

from .artifact import Artifact
from .module import Module

__all__ = ["Artifact", "Module"]
