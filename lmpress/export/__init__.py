"""Exporters to other ecosystems' formats, one registry (:data:`EXPORTERS`)."""

from lmpress.export import compressed_tensors, gguf  # noqa: F401  (registers the exporters)
from lmpress.export.base import (
    EXPORTERS,
    ExporterSpec,
    ExportOption,
    atomic_output,
    register_exporter,
)

__all__ = ["EXPORTERS", "ExportOption", "ExporterSpec", "atomic_output", "register_exporter"]
