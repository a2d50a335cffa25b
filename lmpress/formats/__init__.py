"""Number formats (one registry, :data:`FORMATS`) and quantization schemes."""

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
