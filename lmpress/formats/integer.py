"""Integer code formats: ``bits`` wide unsigned codes, with a zero point for signed use."""

from dataclasses import dataclass

from lmpress.errors import LmpressError
from lmpress.registry import Registry

SUPPORTED_INT_BITS = (2, 3, 4, 5, 6, 8)

FORMATS: Registry[type] = Registry("format")


@FORMATS.register("int")
@dataclass(frozen=True)
class IntFormat:
    """Unsigned integer codes in ``[0, 2**bits - 1]``.

    Symmetric schemes use the implicit zero point ``2**(bits-1)`` so a code ``q``
    decodes to ``(q - 2**(bits-1)) * scale``; asymmetric ones store a zero point.
    """

    bits: int

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_INT_BITS:
            raise LmpressError(
                f"bits={self.bits} is not supported for integer codes; "
                f"choose one of {', '.join(map(str, SUPPORTED_INT_BITS))}"
            )

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    @property
    def mid(self) -> int:
        """Implicit zero point of symmetric schemes."""
        return 1 << (self.bits - 1)
