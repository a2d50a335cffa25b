"""Exporters to other ecosystems' formats, one registry (:data:`EXPORTERS`)."""

from lmpress.export import compressed_tensors, gguf  # noqa: F401  (registers the exporters)
from lmpress.export.base import EXPORTERS, atomic_output

__all__ = ["EXPORTERS", "atomic_output"]
