"""Exporters: write a compressed model in another ecosystem's format. One registry.

An exporter is a function ``(model, tokenizer, out, options) -> summary`` where
``model`` is a loaded lmpress model (``QLinear`` modules), ``out`` a path that
does not exist yet (files are written under a temporary name and renamed at the
end), and ``summary`` a JSON-able dict: what was written, and for every tensor
whether it is exact or how far it moved.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from lmpress.outputs import atomic_output
from lmpress.registry import Registry

Exporter = Callable[[nn.Module, Any, Path, dict[str, Any]], dict[str, Any]]
EXPORTERS: Registry[Exporter] = Registry("export format")

__all__ = ["EXPORTERS", "Exporter", "atomic_output"]
