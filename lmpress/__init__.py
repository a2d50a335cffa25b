"""lmpress: compress trained language models and measure what it cost."""

from lmpress.__version__ import __version__
from lmpress.api import evaluate, evaluate_tasks, export_model, load, quantize, save
from lmpress.errors import LmpressError
from lmpress.formats.scheme import Scheme, parse_scheme
from lmpress.recipe import Recipe
from lmpress.runtime import generate

__all__ = [
    "LmpressError",
    "Recipe",
    "Scheme",
    "__version__",
    "evaluate",
    "evaluate_tasks",
    "export_model",
    "generate",
    "load",
    "parse_scheme",
    "quantize",
    "save",
]
