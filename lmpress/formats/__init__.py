"""Number formats and quantization schemes."""

from lmpress.formats.integer import IntFormat
from lmpress.formats.scheme import Scheme, parse_scheme

__all__ = ["IntFormat", "Scheme", "parse_scheme"]
