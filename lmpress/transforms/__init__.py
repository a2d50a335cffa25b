"""Block transforms applied before quantization: each file registers one in ``TRANSFORMS``."""

from lmpress.transforms import awq  # noqa: F401  (registration)
from lmpress.transforms.base import TRANSFORMS, TransformSpec, get_transform

__all__ = ["TRANSFORMS", "TransformSpec", "get_transform"]
