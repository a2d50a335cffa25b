"""Loading models and finding their decoder blocks."""

from lmpress.models.arch import BlockLayout, find_layout
from lmpress.models.load import LoadedModel, load_model, resolve_model_path

__all__ = ["BlockLayout", "LoadedModel", "find_layout", "load_model", "resolve_model_path"]
