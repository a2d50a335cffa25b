"""Number formats (one registry, :data:`FORMATS`) and quantization schemes."""

# every format registers itself on import (their spellings do not overlap)
from lmpress.formats import fp4, fp8, iq4nl, lut, mix, mx, nf4, nupes, nvfp4  # noqa: F401
from lmpress.formats.base import FORMATS, Format, register_format, require_ops
from lmpress.formats.integer import IntFormat
from lmpress.formats.scheme import Scheme, parse_scheme

__all__ = [
    "FORMATS",
    "Format",
    "IntFormat",
    "Scheme",
    "parse_scheme",
    "register_format",
    "require_ops",
]
