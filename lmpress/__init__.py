"""lmpress: compress trained language models and measure what it cost.

The names below import their modules (and torch) on first use, so that ``import
lmpress`` and the command line's first moments stay light: a Ctrl-C there ends in
one line instead of a traceback from inside an import.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from lmpress.__version__ import __version__
from lmpress.errors import LmpressError

_WHERE = {
    "evaluate": "lmpress.api",
    "evaluate_tasks": "lmpress.api",
    "export_model": "lmpress.api",
    "load": "lmpress.api",
    "quantize": "lmpress.api",
    "save": "lmpress.api",
    "Scheme": "lmpress.formats.scheme",
    "parse_scheme": "lmpress.formats.scheme",
    "Recipe": "lmpress.recipe",
    "generate": "lmpress.runtime",
}

if TYPE_CHECKING:
    from lmpress.api import evaluate, evaluate_tasks, export_model, load, quantize, save
    from lmpress.formats.scheme import Scheme, parse_scheme
    from lmpress.recipe import Recipe
    from lmpress.runtime import generate


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'lmpress' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


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
